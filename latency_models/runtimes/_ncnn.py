"""ncnn (CPU, Vulkan off) behind the runtime interface, converted with pnnx.

Conversion runs the ``pnnx`` binary that the ``pnnx`` wheel ships (a standalone
executable: it reads ONNX without torch, though pip installs torch with the wheel) in a
child process, with ``fp16=0`` so weights stay fp32. pnnx names graph inputs ``in0,
in1, ...`` and outputs ``out0, ...`` in ONNX order. The net loads with
``opt.num_threads=threads`` (OpenMP, in ncnn's own libgomp), Vulkan off and fp16/bf16
storage and arithmetic off, so fp32 graphs compute in fp32 on ARM too. ncnn has no batch
dimension: a batch of N runs as N extractions in sequence.

int8: not supported (``int8 = False``). pnnx does not convert QuantizeLinear /
DequantizeLinear (it logs ``todo QuantizeLinear`` and writes layers ncnn cannot load),
and ncnn's int8 path needs its own calibration tools, ``ncnn2table`` and ``ncnn2int8``,
which are C++ programs built from ncnn's source tree: neither the ``ncnn`` nor the
``pnnx`` wheel ships them or binds them to Python (the runtime's int8 kernels are there,
but nothing in the wheels writes an int8 param/bin). QDQ graphs raise ConversionError.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
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
    run_tool,
    tail,
)
from ._onnx_io import graph_io, has_qdq, load_onnx, lower_ir_version


def pnnx_binary() -> Path | None:
    """The executable in the installed ``pnnx`` package, found without importing torch."""
    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for name in ("pnnx", "pnnx.exe"):
            path = Path(folder) / name
            if path.is_file():
                return path
    return None


class NcnnRuntime(Runtime):
    """Tencent's ncnn on the CPU, fp32 only (see the module docstring for int8)."""

    name = "ncnn"
    extra = "ncnn"
    int8 = False
    description = "ncnn CPU (pnnx converts ONNX; fp32 only)"
    modules = ("ncnn",)

    def _require(self) -> None:
        super()._require()
        if pnnx_binary() is None:
            raise self._not_installed()

    def version(self) -> str:
        """``ncnn <version> (pnnx <version>)``."""
        self._require()
        import ncnn

        return f"ncnn {ncnn.__version__} (pnnx {importlib.metadata.version('pnnx')})"

    def convert(self, model: bytes, out_dir: Path, *, name: str = "model") -> list[Path]:
        """Write ``<name>.ncnn.param`` and ``<name>.ncnn.bin``."""
        self._require()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="hwnas-ncnn-") as tmp:
            files = _convert(load_onnx(model, why="the ncnn backend"), Path(tmp))
            param, weights = (
                Path(shutil.copy(f, out_dir / f"{name}{f.suffixes[-2]}{f.suffix}")) for f in files
            )
            return [param, weights]

    def prepare(
        self, model: bytes, *, threads: int, batch_size: int = 1, seed: int = 0
    ) -> Prepared:
        """Convert into a temporary folder, load with ``threads`` threads, build inputs."""
        check_settings(threads, batch_size)
        self._require()
        import ncnn

        proto = load_onnx(model, why="the ncnn backend")
        specs, outputs = graph_io(proto)
        feeds, notes = random_inputs(specs, batch_size, seed)
        tmp = Path(tempfile.mkdtemp(prefix="hwnas-ncnn-"))
        try:
            param, weights = _convert(proto, tmp)
            net = ncnn.Net()
            _set_options(net.opt, threads)
            if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
                raise ConversionError(f"ncnn could not load pnnx's output {param.name}.")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        in_names = [f"in{i}" for i in range(len(specs))]
        out_names = [f"out{i}" for i in range(len(outputs))]
        missing = sorted(set(in_names + out_names) - set(net.input_names() + net.output_names()))
        if missing:
            raise ConversionError(f"pnnx's ncnn graph lacks the blobs {missing}.")
        kernels = [{"name": layer.name, "type": layer.type} for layer in net.layers()]
        if batch_size > 1:
            notes.append(f"ncnn has no batch dimension: {batch_size} extractions per run")

        def extract(mats: list[list[Any]]) -> list[list[Any]]:
            results = []
            for per_item in mats:
                ex = net.create_extractor()
                for blob, mat in zip(in_names, per_item, strict=True):
                    ex.input(blob, mat)
                results.append([ex.extract(blob)[1] for blob in out_names])
            return results

        fixed = _mats(ncnn, feeds)

        def infer(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
            results = extract(_mats(ncnn, {n: inputs[n] for n, _, _ in specs}))
            return [_output(results, k, dims) for k, (_, dims) in enumerate(outputs)]

        return Prepared(
            run=lambda: extract(fixed),
            infer=infer,
            inputs=feeds,
            notes=notes,
            kernels=kernels,
            precision="fp32",
            _close=net.clear,
        )


def _set_options(opt: Any, threads: int) -> None:
    opt.num_threads = threads
    opt.use_vulkan_compute = False
    for flag in (
        "use_fp16_packed",
        "use_fp16_storage",
        "use_fp16_arithmetic",
        "use_bf16_storage",
        "use_bf16_packed",
    ):
        if hasattr(opt, flag):
            setattr(opt, flag, False)


def _convert(proto: Any, work: Path) -> tuple[Path, Path]:
    """Convert with pnnx into ``work``; returns the ncnn (param, bin)."""
    import ncnn

    if has_qdq(proto):
        raise ConversionError(
            "ncnn backend is fp32 only: pnnx leaves QuantizeLinear/DequantizeLinear "
            "unconverted ('todo QuantizeLinear') and the wheels lack ncnn2int8."
        )
    src = work / "model.onnx"
    src.write_bytes(lower_ir_version(proto).SerializeToString())
    param, weights = work / "model.ncnn.param", work / "model.ncnn.bin"
    outputs = {
        "pnnxparam": "model.pnnx.param",
        "pnnxbin": "model.pnnx.bin",
        "pnnxpy": "model_pnnx.py",
        "pnnxonnx": "model.pnnx.onnx",
        "ncnnparam": param.name,
        "ncnnbin": weights.name,
        "ncnnpy": "model_ncnn.py",
    }
    argv = [str(pnnx_binary()), src.name, "fp16=0", *(f"{k}={v}" for k, v in outputs.items())]
    log = run_tool(argv, cwd=work, what="pnnx")
    if not param.exists():
        raise ConversionError(f"pnnx wrote no ncnn graph: {tail(log)}")
    layer_types = [ln.split()[0] for ln in param.read_text().splitlines()[2:] if ln.strip()]
    unknown = sorted({t for t in layer_types if ncnn.layer_to_index(t) < 0})
    if unknown:
        said = tail(log, keep=lambda ln: "todo" in ln or "unsupported" in ln.lower())
        raise ConversionError(f"pnnx could not convert {unknown} to ncnn layers: {said}")
    return param, weights


def _mats(ncnn: Any, feeds: dict[str, np.ndarray]) -> list[list[Any]]:
    """The inputs as ncnn Mats per batch item (batch axis dropped), in input order."""
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in feeds.values()]
    batch = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
    return [[ncnn.Mat(np.ascontiguousarray(a[b])) for a in arrays] for b in range(batch)]


def _output(results: list[list[Any]], k: int, dims: tuple[int | None, ...]) -> np.ndarray:
    """Output ``k`` of every batch item, stacked and shaped as the ONNX graph declares."""
    out = np.stack([np.array(item[k]) for item in results])
    if not dims or None in dims[1:]:
        return out
    want = [out.shape[0], *dims[1:]]
    return out.reshape(want) if int(np.prod(want)) == out.size else out


register(NcnnRuntime())
