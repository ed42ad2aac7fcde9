"""Accepting ONNX graphs in the forms users have them: a ModelProto, a file path or bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    import onnx

GraphLike = Union["onnx.ModelProto", str, Path, bytes]


def load_graph(graph: GraphLike) -> onnx.ModelProto:
    """Return ``graph`` as an ``onnx.ModelProto``.

    Args:
        graph: A ModelProto, a path to an ``.onnx`` file, or the serialized bytes.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the bytes or file are not a valid ONNX model.
        TypeError: ``graph`` is none of the accepted types.
    """
    import onnx

    if isinstance(graph, onnx.ModelProto):
        return graph
    if isinstance(graph, (str, Path)):
        path = Path(graph)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist.")
        data = path.read_bytes()
        source = f"file {str(path)!r}"
    elif isinstance(graph, (bytes, bytearray, memoryview)):
        data = bytes(graph)
        source = f"{len(data)} bytes"
    else:
        raise TypeError(
            f"graph must be an onnx.ModelProto, a path or bytes, got {type(graph).__name__}."
        )
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ValueError(f"{source} is not a valid ONNX model: {exc}") from exc
    if not model.graph.node and not model.graph.output:
        raise ValueError(f"{source} is not a valid ONNX model: it has no nodes and no outputs.")
    return model


def graph_bytes(graph: GraphLike) -> bytes:
    """The serialized bytes of ``graph`` (no re-serialization when bytes or a file are given)."""
    if isinstance(graph, (bytes, bytearray, memoryview)):
        return bytes(graph)
    if isinstance(graph, (str, Path)):
        return Path(graph).read_bytes()
    data: bytes = load_graph(graph).SerializeToString()
    return data


def graph_hash(graph: GraphLike) -> str:
    """SHA-256 hex digest of the graph's serialized bytes: the key of stored measurements."""
    return hashlib.sha256(graph_bytes(graph)).hexdigest()
