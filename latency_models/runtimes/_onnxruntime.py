"""onnxruntime (CPUExecutionProvider) behind the runtime interface.

Session settings are those of hwnas's timing loop: all graph optimizations, sequential
execution, ``threads`` intra-op threads, one inter-op thread. QDQ graphs run as int8
kernels (QLinearConv, QGemm...); ``Prepared.kernels`` lists the optimized graph's nodes,
read back from the model onnxruntime writes after optimizing (needs ``onnx``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ._base import (
    ConversionError,
    Prepared,
    Runtime,
    check_settings,
    random_inputs,
    register,
)

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
_INT8_KERNELS = ("QLinear", "QGemm", "MatMulInteger", "ConvInteger", "DynamicQuantize")


class OnnxRuntime(Runtime):
    """onnxruntime on the CPU: the reference every other runtime is verified against."""

    name = "onnxruntime"
    extra = "onnxruntime"
    int8 = True
    description = "onnxruntime CPUExecutionProvider (QDQ graphs run int8 kernels)"
    modules = ("onnxruntime",)

    def version(self) -> str:
        """``onnxruntime <version>``."""
        self._require()
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__}"

    def convert(self, model: bytes, out_dir: Path, *, name: str = "model") -> list[Path]:
        """Write ``<name>.onnx`` (the graph as given, after checking it loads)."""
        self._require()
        session(model, threads=1)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{name}.onnx"
        path.write_bytes(model)
        return [path]

    def prepare(
        self, model: bytes, *, threads: int, batch_size: int = 1, seed: int = 0
    ) -> Prepared:
        """Create the session and its random inputs (see the module docstring)."""
        check_settings(threads, batch_size)
        self._require()
        tmp = Path(tempfile.mkdtemp(prefix="hwnas-ort-"))
        try:
            sess = session(model, threads=threads, optimized_path=tmp / "optimized.onnx")
            kernels = _kernels(tmp / "optimized.onnx")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        specs = [
            (i.name, _DTYPES.get(i.type, np.float32), _dims(i.shape)) for i in sess.get_inputs()
        ]
        feeds, notes = random_inputs(specs, batch_size, seed)
        names = [o.name for o in sess.get_outputs()]
        run = sess.run

        def infer(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [np.asarray(o) for o in run(names, inputs)]

        if kernels is None:
            precision = "unknown"
            notes.append("onnx is not installed: the optimized graph was not read back")
        else:
            precision = (
                "int8" if any(k["type"].startswith(_INT8_KERNELS) for k in kernels) else "fp32"
            )
        return Prepared(
            run=lambda: run(names, feeds),
            infer=infer,
            inputs=feeds,
            notes=notes,
            kernels=kernels,
            precision=precision,
        )


def session(model: bytes, *, threads: int, optimized_path: Path | None = None) -> Any:
    """An onnxruntime CPU session with the timing loop's settings.

    Raises:
        ConversionError: onnxruntime refused the graph.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    try:
        return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ConversionError(f"onnxruntime rejected the graph: {exc}") from exc


def _dims(shape: Any) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def _kernels(path: Path) -> list[dict[str, Any]] | None:
    try:
        import onnx
    except ImportError:
        return None
    if not path.exists():
        return None
    graph = onnx.load(str(path), load_external_data=False).graph
    return [{"name": n.name, "type": n.op_type, "domain": n.domain} for n in graph.node]


register(OnnxRuntime())
