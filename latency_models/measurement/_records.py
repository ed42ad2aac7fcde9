"""A stored measurement record, read back from its row, and the check of a stored graph."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latency_models.measurement._measure import Measurement


@dataclass(frozen=True)
class StoredRecord:
    """One stored measurement of one graph.

    Attributes:
        id: Row id (increases with insertion).
        graph_hash: SHA-256 of the ONNX bytes.
        measurement: The measurement.
        runtime_version: Runtime on the measuring host.
        host: Host fingerprint.
        created: When it was stored (s since the epoch).
        source: ``"measured"`` or ``"imported:<file name>"``.
        features: The graph's features as given by the caller, or None.
        onnx: The ONNX bytes when loaded (``records(with_onnx=True)``), else None.
        onnx_path: Path of the ONNX file when the store keeps a path instead of bytes.
    """

    id: int
    graph_hash: str
    measurement: Measurement
    runtime_version: str
    host: str
    created: float
    source: str
    features: dict[str, Any] | None = field(default=None, compare=False)
    onnx: bytes | None = field(default=None, repr=False, compare=False)
    onnx_path: str | None = None

    def graph(self) -> bytes:
        """The ONNX bytes (read from :attr:`onnx_path` when the store keeps a path)."""
        if self.onnx is not None:
            return self.onnx
        if self.onnx_path is None:
            raise ValueError(f"record {self.id} holds no graph.")
        return Path(self.onnx_path).read_bytes()


def record_from_row(row: Any) -> StoredRecord:
    """A :class:`StoredRecord` from a query row.

    Raises:
        ValueError: the row's measurement or features are not readable.
    """
    try:
        meas = Measurement.from_dict(json.loads(row[2]))
        feats = None if row[7] is None else json.loads(row[7])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unreadable measurement: {exc}") from exc
    return StoredRecord(row[0], row[1], meas, row[3], row[4], row[5], row[6],
                        feats, row[8], row[9])  # fmt: skip


def onnx_problem(data: bytes) -> str:
    """Why ``data`` is not a self-contained ONNX model, or ``""``."""
    import onnx

    if not data:
        return "empty file; expected an ONNX model."
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf DecodeError and friends
        return f"not an ONNX model ({len(data)} bytes; {type(exc).__name__}: {exc})."
    if not model.graph.node and not model.graph.output:
        return f"not an ONNX model ({len(data)} bytes that decode to an empty graph)."
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return (
            "the model keeps its weights in external files; save it with the weights inside "
            "(onnx.save(model, path, save_as_external_data=False))."
        )
    return ""
