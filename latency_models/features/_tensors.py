"""What featurization knows about a graph's tensors: shapes, element types, constants."""

from __future__ import annotations

from typing import TYPE_CHECKING

from latency_models.features._onnx_ops import BYTES_PER_ELEM, numel

if TYPE_CHECKING:
    import onnx


class GraphTensors:
    """Shapes (from ONNX shape inference), element types and constants of one graph.

    Attributes:
        shapes: Tensor name -> shape; symbolic dims read as the batch size (first) or 1.
        elem: Tensor name -> ONNX element type.
        const: Names of tensors computable without the graph's inputs (folded away).
        const_elem: Constant tensor -> element type (through DequantizeLinear, reshapes).
        alias: Tensor -> the tensor it is a copy of (``Identity``, ``Dropout``).
    """

    def __init__(self, model: onnx.ModelProto, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.elem: dict[str, int] = {}
        self.const: set[str] = {i.name for i in model.graph.initializer}
        self.const_elem: dict[str, int] = {i.name: i.data_type for i in model.graph.initializer}
        self.alias: dict[str, str] = {}

    def infer_shapes(self) -> None:
        """Fill :attr:`shapes` and :attr:`elem` by ONNX shape inference.

        Raises:
            ValueError: shape inference fails on the graph.
        """
        import onnx
        from onnx import helper

        graph = self.model.graph
        # Shape inference needs only the big initializers' shapes: declare them as typed
        # inputs instead of copying their data (10-100x faster on real models).
        light = onnx.ModelProto()
        light.ir_version = self.model.ir_version
        light.opset_import.extend(self.model.opset_import)
        light.graph.node.extend(graph.node)
        light.graph.input.extend(graph.input)
        light.graph.output.extend(graph.output)
        input_names = {i.name for i in graph.input}
        for init in graph.initializer:
            if numel(init.dims) <= 64:
                light.graph.initializer.append(init)
            elif init.name not in input_names:
                light.graph.input.append(
                    helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
                )
        for init in graph.initializer:
            self.shapes[init.name] = tuple(int(d) for d in init.dims)
            self.elem[init.name] = init.data_type
        try:
            inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
        except Exception as exc:  # onnx raises InferenceError and C++ errors
            raise ValueError(f"ONNX shape inference failed on this graph: {exc}") from exc
        g = inferred.graph
        for vi in [*g.input, *g.value_info, *g.output]:
            tt = vi.type.tensor_type
            if not tt.HasField("shape"):
                continue
            dims = []
            for i, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(int(d.dim_value))
                else:
                    dims.append(self.batch_size if i == 0 else 1)
            self.shapes[vi.name] = tuple(dims)
            self.elem[vi.name] = tt.elem_type

    def static_shape(self, name: str) -> bool:
        """Whether the shape of ``name`` is known."""
        return name in self.shapes

    def resolve(self, name: str) -> str:
        """The tensor ``name`` is a copy of, through any chain of aliases."""
        while name in self.alias:
            name = self.alias[name]
        return name

    def nbytes(self, name: str, dtype: str | None = None) -> float:
        """Bytes of tensor ``name``, at ``dtype`` (``"int8"``, ``"fp32"``) or its own type."""
        shape = self.shapes.get(name, ())
        if dtype == "int8":
            per = 1
        elif dtype == "fp32":
            per = 4
        else:
            per = BYTES_PER_ELEM.get(self.elem.get(name, 1), 4)
        return float(numel(shape) * per)

    def channels(self, name: str) -> int:
        """Dimension 1 of tensor ``name`` (0 when it has fewer than two)."""
        shape = self.shapes.get(name, ())
        return int(shape[1]) if len(shape) >= 2 else 0
