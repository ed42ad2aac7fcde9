"""Apache TVM (Relax, ``llvm`` for this CPU) behind the runtime interface.

The ONNX graph is imported with ``tvm.relax.frontend.onnx.from_onnx`` (weights bound as
constants), lowered with the default CPU pipeline and built for the host CPU
(``Target.from_device``: ``llvm -mcpu=<this cpu>``); a Relax VM runs it.

Untuned: the default pipeline emits plain loop nests, without tiling, vectorization or
parallel loops, and MetaSchedule tuning (``static_shape_tuning``) segfaults in the
0.27 wheel. This backend parallelizes the outer spatial loops of every kernel so that
``threads`` means something, but latencies are those of *untuned* TVM (ResNet-18 at
224x224: about 1.9 s on one core against 34 ms in onnxruntime), not of a tuned
deployment; the note in ``Prepared.notes`` says so.

Threads: TVM's thread pool is process-wide. Its size is fixed when the runtime first
starts (``TVM_NUM_THREADS``, else the cores TVM counts): this module sets
``TVM_NUM_THREADS`` to ``os.cpu_count()`` unless set before TVM is imported, and each
``run()`` re-applies its own ``threads`` (``runtime.config_threadpool``) when another
prepared model changed it. ``threads`` above the pool size raise ValueError.

int8: none. QuantizeLinear/DequantizeLinear import as float arithmetic (fake
quantization), so a QDQ graph runs in fp32 with int8 rounding (``precision="fp32"``).
``convert`` writes a shared library (``<name>.so``, needs a C compiler) that
``tvm.runtime.load_module`` loads into a ``relax.VirtualMachine``.
"""

from __future__ import annotations

import os
import sys
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
from ._onnx_io import graph_io, has_qdq, load_onnx

_pool: list[int] = [0]  # threads the process-wide pool is set to (0: not yet)


class TvmRuntime(Runtime):
    """Apache TVM Relax on the CPU, untuned (see the module docstring)."""

    name = "tvm"
    extra = "tvm"
    int8 = False
    description = "Apache TVM Relax, llvm for the host CPU, untuned default schedules"
    modules = ("tvm",)

    def _require(self) -> None:
        if "tvm" not in sys.modules:
            os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
        super()._require()

    def version(self) -> str:
        """``tvm <version>``."""
        self._require()
        import tvm

        return f"tvm {tvm.__version__}"

    def convert(self, model: bytes, out_dir: Path, *, name: str = "model") -> list[Path]:
        """Build and write ``<name>.so`` (the Relax VM executable with its weights)."""
        self._require()
        executable, _ = _build(load_onnx(model, why="the tvm backend"))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{name}.so"
        executable.export_library(str(path))
        return [path]

    def prepare(
        self, model: bytes, *, threads: int, batch_size: int = 1, seed: int = 0
    ) -> Prepared:
        """Build for this CPU, size the thread pool, make the VM and the inputs."""
        check_settings(threads, batch_size)
        self._require()
        import tvm
        from tvm import relax

        proto = load_onnx(model, why="the tvm backend")
        specs, _ = graph_io(proto)
        if batch_size > 1 and any(dims[:1] == (None,) for _, _, dims in specs):
            raise ValueError("the tvm backend builds static shapes; export with batch fixed.")
        feeds, notes = random_inputs(specs, batch_size, seed)
        _set_threads(threads)
        executable, target = _build(proto)
        vm = relax.VirtualMachine(executable, tvm.cpu())
        main = vm["main"]
        args = [tvm.runtime.tensor(arr) for arr in feeds.values()]
        notes.append(f"untuned TVM ({target}): default schedules, outer loops parallel")
        if has_qdq(proto):
            notes.append("QuantizeLinear/DequantizeLinear run as float ops (fake quantization)")

        def run() -> object:
            if _pool[0] != threads:
                _set_threads(threads)
            return main(*args)

        def infer(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
            _set_threads(threads)
            out = main(*(tvm.runtime.tensor(inputs[name]) for name, _, _ in specs))
            return [np.asarray(t.numpy()) for t in _flatten(out)]

        return Prepared(run=run, infer=infer, inputs=feeds, notes=notes, precision="fp32")


def _set_threads(threads: int) -> None:
    """Size TVM's process-wide pool to ``threads``; ValueError when it cannot grow so far."""
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(0, threads)
    got = int(tvm.get_global_func("runtime.NumThreads")())
    if got != threads:
        raise ValueError(
            f"TVM's thread pool has {got} threads, not {threads}: its size is fixed when "
            "TVM starts; set TVM_NUM_THREADS before importing tvm."
        )
    _pool[0] = threads


def _build(proto: Any) -> tuple[Any, Any]:
    """Import, lower with outer loops parallel, and build for the host CPU."""
    import tvm
    from tvm import relax
    from tvm.relax.backend import cpu_generic
    from tvm.relax.frontend.onnx import from_onnx

    try:
        mod = from_onnx(proto, keep_params_in_input=False)
    except Exception as exc:  # the frontend raises tvm errors, KeyError, ...
        message = str(exc).strip().splitlines()
        raise ConversionError(f"TVM's ONNX frontend refused the graph: {message[:3]}") from exc
    target = tvm.target.Target.from_device(tvm.cpu())
    with target:
        mod = relax.transform.DecomposeOpsForInference()(mod)
        passes = cpu_generic.library_dispatch_passes(target) + cpu_generic.legalize_passes(target)
        mod = _parallelize(tvm.transform.Sequential(passes)(mod))
    try:
        return tvm.compile(mod, target=target), target
    except Exception as exc:
        raise ConversionError(f"TVM could not build the graph: {exc}") from exc


def _parallelize(mod: Any) -> Any:
    """Fuse and parallelize the leading spatial loops of every block of every kernel."""
    from tvm import tirx
    from tvm.s_tir import Schedule

    for gv, func in list(mod.functions.items()):
        if not isinstance(func, tirx.PrimFunc):
            continue
        sch = Schedule(func)
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            loops = sch.get_loops(block)
            spatial = 0
            for iter_var in sch.get(block).iter_vars[: min(2, len(loops))]:
                if iter_var.iter_type != tirx.IterVar.DataPar:
                    break
                spatial += 1
            if spatial == 0:
                continue
            try:
                fused = sch.fuse(*loops[:spatial]) if spatial > 1 else loops[0]
                sch.parallel(fused)
            except Exception:  # a block whose loops do not map stays serial
                continue
        mod[gv] = sch.mod["main"]
    return mod


def _flatten(out: Any) -> list[Any]:
    if hasattr(out, "numpy"):
        return [out]
    return [t for item in out for t in _flatten(item)]


register(TvmRuntime())
