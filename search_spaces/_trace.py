"""Trace a model with torch.fx into channel spaces, layers and removable blocks.

Why a torch.fx tracer of its own and not Torch-Pruning's dependency graph: the search needs
three things a pruning library does not give in one place: (1) a *space* (named decision points
with finite choices), not a pruner that mutates the model; (2) a guarantee that anything it
does not understand is frozen with a reason instead of raising (Torch-Pruning 1.6 raised
IndexError on a ShuffleNet-V2 unit); (3) low-rank, block removal and bit-width choices on the
same graph. ``torch.fx.symbolic_trace`` gives the module-level graph with module paths
(``nn_module_stack``) and ``ShapeProp`` gives every tensor's shape, which is all the channel
bookkeeping needs; it is part of torch, so there is no extra dependency to keep in step with
torch releases. The design follows Torch-Pruning's (per-op rules, a graph of coupled channel
dimensions), not its code.

The model is a union-find over *channel spaces*. Each Conv2d/Linear output opens a space
(prunable: its weight's out dim); BatchNorm, activations, pooling, dropout and identity-like ops
pass the space through; a depthwise conv follows its input; ``add``/``mul`` of two tensors unions
their spaces; ``cat`` along channels concatenates layouts; ``flatten`` keeps the layout with a
spatial multiplier. Everything else (reshape, view, chunk, split, transpose, channel shuffle,
grouped convs, unknown modules) freezes the spaces it touches and records why.
"""

from __future__ import annotations

import logging
import operator
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from search_spaces._errors import TraceError

_logger = logging.getLogger(__name__)

_PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
    nn.Sigmoid, nn.Tanh, nn.Mish, nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool2d,
    nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool1d, nn.AvgPool1d,
)  # fmt: skip
_PASS_FUNCTIONS: set[Any] = {
    torch.relu, torch.sigmoid, torch.tanh, torch.clamp, torch.nn.functional.relu,
    torch.nn.functional.relu6, torch.nn.functional.gelu, torch.nn.functional.silu,
    torch.nn.functional.hardswish, torch.nn.functional.hardsigmoid, torch.nn.functional.dropout,
    torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d,
    torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.adaptive_max_pool2d,
    torch.nn.functional.leaky_relu, torch.nn.functional.sigmoid, operator.neg,
}  # fmt: skip
_PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "clamp", "contiguous", "clone", "float"}
_BINARY = {
    operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, operator.isub,
    operator.truediv, torch.add, torch.mul, torch.sub,
}  # fmt: skip
_BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub"}
_ADDS = {operator.add, operator.iadd, torch.add, "add", "add_"}


@dataclass(frozen=True)
class Layout:
    """Channel layout of a tensor: its channel dim is the concatenation of ``segments``.

    ``inner`` > 1 means the tensor was flattened: each channel owns ``inner`` features.
    """

    segments: tuple[int, ...]
    inner: int = 1


@dataclass
class LayerInfo:
    """A Conv2d/Linear/BatchNorm the tracer can slice.

    Attributes:
        path: module path in the model.
        kind: "conv", "dwconv", "linear" or "bn".
        out: layout of the out dim (weight dim 0).
        inp: layout of the in dim (weight dim 1; None for dwconv and bn).
    """

    path: str
    kind: str
    out: Layout
    inp: Layout | None = None


@dataclass
class TraceResult:
    """What the tracer found; spaces are union-find classes, resolved with :meth:`find`."""

    parent: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    reasons: dict[int, list[str]] = field(default_factory=dict)
    layers: dict[str, LayerInfo] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)
    leaves: dict[str, str] = field(default_factory=dict)
    layer_macs: dict[str, int] = field(default_factory=dict)

    def new_space(self, size: int, reason: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        if reason:
            self.freeze(len(self.parent) - 1, reason)
        return len(self.parent) - 1

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.reasons.setdefault(ra, []).extend(self.reasons.pop(rb, []))

    def freeze(self, space: int, reason: str) -> None:
        self.reasons.setdefault(self.find(space), []).append(reason)

    def freeze_layout(self, layout: Layout | None, reason: str) -> None:
        for seg in layout.segments if layout else ():
            self.freeze(seg, reason)

    def frozen_reasons(self, space: int) -> list[str]:
        return self.reasons.get(self.find(space), [])

    def layout_size(self, layout: Layout) -> int:
        return sum(self.sizes[s] for s in layout.segments) * layout.inner


class _Tracer(fx.Tracer):
    """fx tracer that can treat chosen submodules as leaves and remembers where it failed."""

    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.extra_leaves = leaves
        self.failed_at: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.extra_leaves or super().is_leaf_module(
            m, module_qualified_name
        )

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_at is None:
                self.failed_at = self.path_of_module(m)
            raise


def _failing_line(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/torch/" not in f.filename]
    if not frames:
        return type(exc).__name__
    f = frames[-1]
    return f"{(f.line or '').strip()!r} ({f.filename}:{f.lineno})"


def trace_graph(model: nn.Module, leaves: dict[str, str]) -> fx.GraphModule:
    """Symbolically trace ``model``; untraceable submodules become leaves listed in ``leaves``.

    Raises:
        TraceError: the model's own forward cannot be traced; names the op and module path.
    """
    while True:
        tracer = _Tracer(set(leaves))
        try:
            graph = tracer.trace(model)
            return fx.GraphModule(tracer.root, graph, type(model).__name__)
        except Exception as exc:
            where = tracer.failed_at
            if not where or where in leaves:
                raise TraceError(
                    f"cannot trace {type(model).__name__}: {exc} at op {_failing_line(exc)} "
                    f"in module {where or '(root)'!r}. Make that forward traceable by torch.fx "
                    "(no data-dependent control flow) or move the op into a submodule, which "
                    "hwnas then freezes."
                ) from exc
            leaves[where] = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
            _logger.warning("module %r cannot be traced (%s); frozen", where, leaves[where])


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    shape = getattr(node.meta.get("tensor_meta"), "shape", None)
    return tuple(shape) if shape is not None else None


class _Analyzer:
    """Walk the fx graph once and fill a :class:`TraceResult`."""

    def __init__(self, gm: fx.GraphModule, leaves: dict[str, str]) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.res = TraceResult(leaves=dict(leaves))
        self.layouts: dict[fx.Node, Layout] = {}

    def run(self) -> TraceResult:
        for node in self.gm.graph.nodes:
            if node.op == "output":
                for arg in node.all_input_nodes:
                    self.res.freeze_layout(self.layouts.get(arg), "network output")
                continue
            layout = self._visit(node)
            if layout is not None:
                self.layouts[node] = layout
        self.res.blocks = find_blocks(self.gm)
        return self.res

    def _fresh(self, node: fx.Node, reason: str | None) -> Layout | None:
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return None
        return Layout((self.res.new_space(shape[1], reason),))

    def _visit(self, node: fx.Node) -> Layout | None:
        if node.op == "placeholder":
            return self._fresh(node, "network input")
        if node.op == "get_attr":
            return None
        if node.op == "call_module":
            return self._module(node, self.modules[str(node.target)])
        return self._function(node)

    def _inputs(self, node: fx.Node) -> list[Layout | None]:
        return [self.layouts.get(a) for a in node.all_input_nodes]

    def _freeze_op(self, node: fx.Node, what: str) -> Layout | None:
        reason = f"{what} at {_where(node)}"
        for lay in self._inputs(node):
            self.res.freeze_layout(lay, reason)
        return self._fresh(node, reason)

    def _module(self, node: fx.Node, mod: nn.Module) -> Layout | None:
        path = str(node.target)
        first = node.args[0] if node.args else None
        inp = self.layouts.get(first) if isinstance(first, fx.Node) else None
        if path in self.res.leaves:
            return self._freeze_op(node, f"untraceable module {type(mod).__name__}")
        if isinstance(mod, nn.Conv2d):
            return self._conv(node, path, mod, inp)
        if isinstance(mod, nn.Linear):
            return self._linear(node, path, mod, inp)
        if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d) and inp and mod.track_running_stats:
            self.res.layers[path] = LayerInfo(path, "bn", inp)
            return inp
        if isinstance(mod, _PASS_MODULES):
            return inp
        if isinstance(mod, nn.Flatten) and mod.start_dim == 1:
            return self._flatten(node, inp)
        return self._freeze_op(node, f"module {type(mod).__name__}")

    def _conv(self, node: fx.Node, path: str, mod: nn.Conv2d, inp: Layout | None) -> Layout | None:
        self.res.layer_macs[path] = _conv_macs(node, mod)
        if inp is None or inp.inner != 1:
            return self._freeze_op(node, "conv on an untracked input")
        depthwise = mod.groups == mod.in_channels == mod.out_channels
        if depthwise:
            self.res.layers[path] = LayerInfo(path, "dwconv", inp)
            return inp
        out = self._fresh(node, None)
        if out is None:
            return None
        self.res.layers[path] = LayerInfo(path, "conv", out, inp)
        if mod.groups != 1:
            self._freeze_op(node, f"grouped conv (groups={mod.groups})")
            self.res.freeze_layout(out, f"grouped conv (groups={mod.groups}) at {path}")
        return out

    def _linear(
        self, node: fx.Node, path: str, mod: nn.Linear, inp: Layout | None
    ) -> Layout | None:
        shape = _shape(node)
        self.res.layer_macs[path] = mod.in_features * mod.out_features * _rows(shape)
        if inp is None or shape is None or len(shape) != 2:
            return self._freeze_op(node, "Linear on a non-2D input")
        out = Layout((self.res.new_space(shape[1]),))
        self.res.layers[path] = LayerInfo(path, "linear", out, inp)
        return out

    def _flatten(self, node: fx.Node, inp: Layout | None) -> Layout | None:
        in_shape = _shape(node.all_input_nodes[0])
        if inp is None or in_shape is None:
            return self._freeze_op(node, "flatten of an untracked input")
        spatial = 1
        for d in in_shape[2:]:
            spatial *= d
        return Layout(inp.segments, inp.inner * spatial)

    def _function(self, node: fx.Node) -> Layout | None:
        target = node.target
        tensors = [a for a in node.args if isinstance(a, fx.Node)]
        first = self.layouts.get(tensors[0]) if tensors else None
        if target in _PASS_FUNCTIONS or target in _PASS_METHODS:
            return first
        if target in ("size", "dim") or target is getattr:
            return None
        if target in _BINARY or target in _BINARY_METHODS:
            return self._binary(node, tensors)
        if target in (torch.flatten, "flatten") and _arg(node, 1, "start_dim", 0) == 1:
            return self._flatten(node, first)
        if target in ("view", "reshape", torch.reshape) and _is_batch_flatten(node):
            return self._flatten(node, first)
        if target in ("mean", torch.mean) and _is_spatial_mean(node):
            return first
        if target is torch.cat:
            return self._cat(node)
        return self._freeze_op(node, _op_name(node))

    def _binary(self, node: fx.Node, tensors: list[fx.Node]) -> Layout | None:
        lays = [self.layouts.get(t) for t in tensors if _shape(t) is not None]
        if len(lays) < 2:
            return lays[0] if lays else self._fresh(node, None)
        a, b = lays[0], lays[1]
        if a is None or b is None:
            return self._freeze_op(node, f"{_op_name(node)} of an untracked input")
        sizes_a = [self.res.sizes[s] for s in a.segments]
        sizes_b = [self.res.sizes[s] for s in b.segments]
        if sizes_a != sizes_b or a.inner != b.inner:
            return self._freeze_op(node, f"{_op_name(node)} of differently laid-out channels")
        for sa, sb in zip(a.segments, b.segments, strict=True):
            self.res.union(sa, sb)
        return a

    def _cat(self, node: fx.Node) -> Layout | None:
        parts = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = _arg(node, 1, "dim", 0)
        shape = _shape(node)
        if shape is None or not isinstance(parts, list | tuple) or dim not in (1, 1 - len(shape)):
            return self._freeze_op(node, "cat along a non-channel dim")
        lays = [self.layouts.get(p) for p in parts]
        if any(lay is None or lay.inner != 1 for lay in lays):
            return self._freeze_op(node, "cat of untracked inputs")
        return Layout(tuple(s for lay in lays if lay for s in lay.segments))


def _arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _is_batch_flatten(node: fx.Node) -> bool:
    shape_args = node.args[1:]
    if len(shape_args) == 1 and isinstance(shape_args[0], list | tuple):
        shape_args = tuple(shape_args[0])
    return len(shape_args) == 2 and isinstance(shape_args[1], int) and shape_args[1] == -1


def _is_spatial_mean(node: fx.Node) -> bool:
    dims = _arg(node, 1, "dim", None)
    dims = (dims,) if isinstance(dims, int) else dims
    keep = _arg(node, 2, "keepdim", False)
    return isinstance(dims, list | tuple) and 0 not in dims and 1 not in dims and not keep


def _op_name(node: fx.Node) -> str:
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack.values()))[0] if stack else ""
    return f"{path or '(root)'} ({node.name})"


def _rows(shape: tuple[int, ...] | None) -> int:
    rows = 1
    for d in (shape or (1, 1))[:-1]:
        rows *= d
    return rows


def _conv_macs(node: fx.Node, mod: nn.Conv2d) -> int:
    shape = _shape(node) or (1, 0, 0, 0)
    kh, kw = mod.kernel_size
    per_out = mod.in_channels // mod.groups * kh * kw
    return shape[0] * shape[1] * shape[2] * shape[3] * per_out


def _block_path(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else None


def _inside(node: fx.Node, path: str) -> bool:
    stack = node.meta.get("nn_module_stack") or {}
    return any(v[0] == path for v in stack.values())


def find_blocks(gm: fx.GraphModule) -> list[str]:
    """Residual blocks ``y = act(x + f(x))`` whose module can be replaced by identity.

    A block is the innermost module holding an ``add`` whose one operand is the block's only
    input, whose output has that input's shape, and which runs once.
    """
    blocks: list[str] = []
    for node in gm.graph.nodes:
        if node.op not in ("call_function", "call_method") or node.target not in _ADDS:
            continue
        path = _block_path(node)
        if not path or path in blocks:
            continue
        operands = [_skip_identity(gm, a) for a in node.args if isinstance(a, fx.Node)]
        outside = [a for a in operands if not _inside(a, path)]
        if len(operands) == 2 and len(outside) == 1 and _is_block(gm, path, outside[0]):
            blocks.append(path)
    return blocks


def _skip_identity(gm: fx.GraphModule, node: fx.Node) -> fx.Node:
    """Look through ``nn.Identity`` shortcuts (``out = f(x) + self.shortcut(x)``)."""
    while node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), nn.Identity):
        node = node.all_input_nodes[0]
    return node


def _is_block(gm: fx.GraphModule, path: str, x: fx.Node) -> bool:
    members = [n for n in gm.graph.nodes if _inside(n, path)]
    keys = {k for n in members for k, v in n.meta["nn_module_stack"].items() if v[0] == path}
    if len(keys) != 1:
        return False
    member_set = set(members)
    external = {a for n in members for a in n.all_input_nodes if a not in member_set}
    external = {a for a in external if a.op != "get_attr"}
    outputs = [n for n in members if any(u not in member_set for u in n.users)]
    return external == {x} and len(outputs) == 1 and _shape(outputs[0]) == _shape(x)


def analyze_graph(model: nn.Module, example_input: torch.Tensor) -> TraceResult:
    """Trace ``model`` and find its channel spaces, sliceable layers and removable blocks."""
    leaves: dict[str, str] = {}
    gm = trace_graph(model, leaves)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input)
    except Exception as exc:
        raise TraceError(
            f"running the traced {type(model).__name__} on the example input of shape "
            f"{tuple(example_input.shape)} failed: {exc}. Check the example input's shape."
        ) from exc
    return _Analyzer(gm, leaves).run()
