"""OpenVINO (CPU plugin) behind the runtime interface.

OpenVINO reads ONNX directly, QDQ graphs included: its low-precision transformations fold
the Q/DQ pairs into u8/i8 convolutions and matmuls (``brgconv_*_I8`` kernels on x86).
Compile settings, chosen so one request is timed as onnxruntime's sequential session is:

- ``INFERENCE_NUM_THREADS=threads``, ``NUM_STREAMS=1``, ``PERFORMANCE_HINT=LATENCY``:
  one stream of exactly ``threads`` threads (the hint alone picks a thread count itself);
- ``ENABLE_HYPER_THREADING=False``: no second thread on a sibling logical core;
- ``ENABLE_CPU_PINNING=False``: threads follow the process's CPU affinity (hwnas pins the
  process itself) instead of cores the plugin picks;
- ``INFERENCE_PRECISION_HINT=f32``: no silent bf16/f16 on CPUs that have them (AMX,
  AVX512-BF16, ARM fp16), so fp32 graphs compute in fp32.

``Prepared.kernels`` is the runtime model: each executed node's layer type, runtime
precision and primitive (from ``get_runtime_model``); ``precision`` is ``"int8"`` when a
convolution or matmul runs in u8/i8. The thread count is read back after compiling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._base import (
    ConversionError,
    Prepared,
    Runtime,
    check_settings,
    is_int8,
    random_inputs,
    register,
)

_COMPUTE = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")
_SKIP = ("Const", "Input", "Output", "Parameter", "Result")


def compile_config(threads: int) -> dict[str, Any]:
    """The CPU plugin properties every measurement compiles with (module docstring)."""
    return {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_HYPER_THREADING": False,
        "ENABLE_CPU_PINNING": False,
        "INFERENCE_PRECISION_HINT": "f32",
    }


class OpenVinoRuntime(Runtime):
    """OpenVINO's CPU plugin; runs QDQ graphs as int8 kernels."""

    name = "openvino"
    extra = "openvino"
    int8 = True
    description = "OpenVINO CPU plugin (reads ONNX; QDQ graphs run u8/i8 kernels)"
    modules = ("openvino",)

    def version(self) -> str:
        """``openvino <version>``."""
        self._require()
        import openvino as ov

        return f"openvino {ov.__version__}"

    def convert(self, model: bytes, out_dir: Path, *, name: str = "model") -> list[Path]:
        """Write OpenVINO IR: ``<name>.xml`` and ``<name>.bin`` (weights kept in fp32)."""
        self._require()
        import openvino as ov

        ov_model = _read(ov.Core(), model)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        xml = out_dir / f"{name}.xml"
        ov.save_model(ov_model, str(xml), compress_to_fp16=False)
        return [xml, xml.with_suffix(".bin")]

    def prepare(
        self, model: bytes, *, threads: int, batch_size: int = 1, seed: int = 0
    ) -> Prepared:
        """Read, reshape dynamic batch dims, compile (module docstring) and build inputs."""
        check_settings(threads, batch_size)
        self._require()
        import openvino as ov

        core = ov.Core()
        ov_model = _read(core, model)
        specs = [(_name(p), p.get_element_type().to_dtype(), _dims(p)) for p in ov_model.inputs]
        feeds, notes = random_inputs(specs, batch_size, seed)
        if any(None in dims for _, _, dims in specs):
            ov_model.reshape({name: list(arr.shape) for name, arr in feeds.items()})
        try:
            compiled = core.compile_model(ov_model, "CPU", compile_config(threads))
        except Exception as exc:  # openvino raises its own GeneralFailure and others
            raise ConversionError(f"OpenVINO could not compile the graph: {exc}") from exc
        got = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        if got != threads:
            raise ValueError(f"OpenVINO compiled with {got} threads, not the {threads} asked for.")
        kernels = runtime_kernels(compiled)
        int8 = any(k["type"] in _COMPUTE and is_int8(k["precision"]) for k in kernels)
        timed = compiled.create_infer_request()
        for name, arr in feeds.items():
            timed.set_tensor(name, ov.Tensor(arr, shared_memory=True))
        other = compiled.create_infer_request()
        outputs = list(compiled.outputs)

        def infer(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
            result = other.infer({k: np.ascontiguousarray(v) for k, v in inputs.items()})
            return [np.array(result[o]) for o in outputs]

        return Prepared(
            run=timed.infer,
            infer=infer,
            inputs=feeds,
            notes=notes,
            kernels=kernels,
            precision="int8" if int8 else "fp32",
        )


def runtime_kernels(compiled: Any) -> list[dict[str, Any]]:
    """Executed nodes of a compiled model: name, layer type, runtime precision, primitive."""
    kernels = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()

        def get(key: str, info: Any = info) -> str:
            return str(info[key].astype(str)) if key in info else ""

        if get("layerType") in _SKIP:
            continue
        kernels.append(
            {
                "name": op.get_friendly_name(),
                "type": get("layerType"),
                "precision": get("runtimePrecision"),
                "primitive": get("primitiveType"),
                "original": get("originalLayersNames"),
            }
        )
    return kernels


def _read(core: Any, model: bytes) -> Any:
    try:
        return core.read_model(model)
    except Exception as exc:  # OpConversionFailure, GeneralFailure...
        raise ConversionError(f"OpenVINO's ONNX frontend refused the graph: {exc}") from exc


def _name(port: Any) -> str:
    return str(port.get_any_name())


def _dims(port: Any) -> tuple[int | None, ...]:
    return tuple(None if d.is_dynamic else d.get_length() for d in port.get_partial_shape())


register(OpenVinoRuntime())
