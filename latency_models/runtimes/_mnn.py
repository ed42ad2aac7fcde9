"""MNN (CPU) behind the runtime interface.

Conversion uses the converter compiled into the ``mnn`` wheel (the ``_tools`` extension
module behind the ``mnnconvert`` console script) in a child process: it aborts the
process on some graphs, and the wheel's Python wrappers (``MNN.tools``) try to
``pip install`` a logging SDK and send telemetry on import, so they are never imported.
The graph runs in an Interpreter session with ``numThread=threads``, ``precision=high``
(fp32 even where the CPU has fp16 arithmetic), read back through ``getSessionInfo``.

int8: MNN's ONNX converter keeps a QDQ graph's convolutions in fp32 (with
FloatToInt8/Int8ToFloat around them, and it mis-infers shapes of a quantized graph
input), so a QDQ graph is converted the MNN way instead: its Q/DQ nodes are stripped
to an fp32 graph, converted, then quantized with the wheel's post-training tool
(``mnnquant``, KL calibration on random inputs with the seed), skipping the layers the
QDQ graph keeps in fp32. ``Prepared.kernels`` lists what the session executes, with
each op's data type from MNN's callback (``Convolution [ DT_INT8 ]``); ``precision`` is
``"int8"`` when a convolution or matmul runs on int8.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
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
    run_tool,
    tail,
)
from ._onnx_io import graph_io, has_qdq, load_onnx, strip_qdq

_CONVERT = "import sys, _tools; _tools.mnnconvert(sys.argv)"
_QUANTIZE = "import sys, _tools; _tools.mnnquant(sys.argv)"
_THREAD_NUMBER = 4  # MNN::Interpreter::SessionInfoCode
_COMPUTE = ("Convolution", "ConvolutionDepthwise", "Deconvolution", "MatMul", "ConvInt8")
_N_CALIBRATION = 8


class MnnRuntime(Runtime):
    """Alibaba's MNN on the CPU; QDQ graphs are re-quantized with mnnquant (int8)."""

    name = "mnn"
    extra = "mnn"
    int8 = True
    description = "MNN CPU (mnnconvert; QDQ graphs re-quantized with mnnquant)"
    modules = ("MNN",)

    def _require(self) -> None:
        super()._require()
        if importlib.util.find_spec("_tools") is None:
            raise self._not_installed()

    def version(self) -> str:
        """``mnn <version>``."""
        self._require()
        import MNN

        return f"mnn {MNN.version()}"

    def convert(self, model: bytes, out_dir: Path, *, name: str = "model") -> list[Path]:
        """Write ``<name>.mnn`` (int8 where the graph is QDQ)."""
        self._require()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="hwnas-mnn-") as tmp:
            path = _convert(load_onnx(model, why="the mnn backend"), Path(tmp), seed=0)
            return [Path(shutil.copy(path, out_dir / f"{name}.mnn"))]

    def prepare(
        self, model: bytes, *, threads: int, batch_size: int = 1, seed: int = 0
    ) -> Prepared:
        """Convert into a temporary folder, open a session of ``threads`` threads."""
        check_settings(threads, batch_size)
        self._require()
        import MNN

        proto = load_onnx(model, why="the mnn backend")
        specs, outputs = graph_io(proto)
        feeds, notes = random_inputs(specs, batch_size, seed)
        tmp = Path(tempfile.mkdtemp(prefix="hwnas-mnn-"))
        try:
            interp = MNN.Interpreter(str(_convert(proto, tmp, seed=seed)))
            config = {"backend": "CPU", "numThread": threads, "precision": "high"}
            session = interp.createSession(config)
            _resize(interp, session, feeds)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        got = _session_threads(interp, session)
        if got != threads:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ValueError(f"MNN opened a session of {got} threads, not {threads}.")
        out_names = [name for name, _ in outputs]

        def infer(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
            _feed(MNN, interp, session, inputs)
            interp.runSession(session)
            return [_fetch(MNN, interp, session, name) for name in out_names]

        _feed(MNN, interp, session, feeds)
        kernels = _kernels(interp, session)
        int8 = any(k["type"] in _COMPUTE and k["precision"] == "int8" for k in kernels)
        if int8:
            notes.append("int8 from mnnquant's own calibration, not the QDQ graph's scales")
        _feed(MNN, interp, session, feeds)
        return Prepared(
            run=lambda: interp.runSession(session),
            infer=infer,
            inputs=feeds,
            notes=notes,
            kernels=kernels,
            precision="int8" if int8 else "fp32",
            _close=lambda: shutil.rmtree(tmp, ignore_errors=True),
        )


def _convert(proto: Any, work: Path, *, seed: int) -> Path:
    """ONNX -> ``work/model.mnn`` (quantized with mnnquant where the graph is QDQ)."""
    target = work / "model.mnn"
    if not has_qdq(proto):
        _mnnconvert(proto, work, target)
        return target
    fp32, int8_layers = strip_qdq(proto)
    _mnnconvert(fp32, work, work / "fp32.mnn")
    specs, _ = graph_io(fp32)
    layers = {n.output[0] for n in fp32.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    skip = sorted(layers - int8_layers)
    config = {
        "path": str(_calibration(specs, work / "calibration", seed)),
        "used_sample_num": _N_CALIBRATION,
        "feature_quantize_method": "KL",
        "weight_quantize_method": "MAX_ABS",
        "input_type": "sequence",
        "inputs": [{"name": name, "shape": _static(dims)} for name, _, dims in specs],
        # MNN names a converted Conv after its output; a Gemm/MatMul gets a suffix.
        **(
            {"skip_quant_op_names": skip + [f"{n}__matmul_converted" for n in skip]}
            if skip
            else {}
        ),
    }
    (work / "quant.json").write_text(json.dumps(config))
    argv = [sys.executable, "-c", _QUANTIZE, "fp32.mnn", target.name, "quant.json"]
    log = run_tool(argv, cwd=work, what="mnnquant")
    if not target.exists():
        raise ConversionError(f"mnnquant wrote no model: {tail(log)}")
    return target


def _mnnconvert(proto: Any, work: Path, target: Path) -> None:
    src = work / f"{target.stem}.onnx"
    src.write_bytes(proto.SerializeToString())
    argv = [sys.executable, "-c", _CONVERT, "-f", "ONNX", "--modelFile", src.name]
    argv += ["--MNNModel", target.name, "--bizCode", "hwnas"]
    log = run_tool(argv, cwd=work, what="MNNConvert")
    if not target.exists() or "Converted Success" not in log:
        said = tail(log, keep=lambda ln: any(w in ln for w in ("Not Support", "rror", "ailed")))
        raise ConversionError(f"MNNConvert refused the graph: {said}")


def _calibration(specs: list[Any], folder: Path, seed: int) -> Path:
    """Random calibration samples in mnnquant's sequence layout: one folder per sample."""
    for i in range(_N_CALIBRATION):
        sample = folder / f"{i:03d}"
        sample.mkdir(parents=True)
        feeds, _ = random_inputs(specs, 1, seed + i)
        for name, arr in feeds.items():
            np.savetxt(sample / f"{name}.txt", arr.reshape(-1), fmt="%.7g")
        shapes = [{"name": n, "shape": list(a.shape)} for n, a in feeds.items()]
        (sample / "input.json").write_text(json.dumps({"inputs": shapes}))
    return folder


def _session_threads(interp: Any, session: Any) -> int:
    """The session's thread count; the Python binding hands back the int's bits as a float."""
    value = interp.getSessionInfo(session, _THREAD_NUMBER)
    if value >= 1:
        return int(value)
    return int(np.array(value, dtype=np.float32).view(np.int32))


def _static(dims: tuple[int | None, ...]) -> list[int]:
    return [d if d is not None else 1 for d in dims]


def _resize(interp: Any, session: Any, feeds: dict[str, np.ndarray]) -> None:
    """Resize inputs whose session shape differs from the feeds (a dynamic batch)."""
    changed = False
    for name, arr in feeds.items():
        tensor = interp.getSessionInput(session, name)
        if tuple(tensor.getShape()) != arr.shape:
            interp.resizeTensor(tensor, arr.shape)
            changed = True
    if changed:
        interp.resizeSession(session)


def _feed(mnn: Any, interp: Any, session: Any, feeds: dict[str, np.ndarray]) -> None:
    for name, arr in feeds.items():
        host = mnn.Tensor(
            arr.shape,
            mnn.Halide_Type_Float,
            np.ascontiguousarray(arr, dtype=np.float32),
            mnn.Tensor_DimensionType_Caffe,
        )
        interp.getSessionInput(session, name).copyFrom(host)


def _fetch(mnn: Any, interp: Any, session: Any, name: str) -> np.ndarray:
    out = interp.getSessionOutput(session, name)
    shape = tuple(out.getShape())
    host = mnn.Tensor(
        shape, mnn.Halide_Type_Float, np.zeros(shape, np.float32), mnn.Tensor_DimensionType_Caffe
    )
    out.copyToHostTensor(host)
    return np.array(host.getNumpyData()).reshape(shape)


def _kernels(interp: Any, session: Any) -> list[dict[str, Any]]:
    """One run with MNN's callback: each executed op's name, type and data type."""
    kernels: list[dict[str, Any]] = []

    def after(tensors: Any, info: Any) -> bool:
        label = info.getType()
        kind, _, rest = label.partition("[")
        precision = "int8" if "INT8" in rest.upper() else "fp32"
        kernels.append({"name": info.getName(), "type": kind.strip(), "precision": precision})
        return True

    interp.runSessionWithCallBackInfo(session, lambda tensors, info: True, after)
    return kernels


register(MnnRuntime())
