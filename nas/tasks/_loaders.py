"""A task's data in any of its three forms: ``(X, y)`` tensors, a Dataset, or a DataLoader.

Tensors are indexed directly (the original fast path, kept bit for bit). A Dataset or a
DataLoader is only ever iterated batch by batch, never gathered into memory: a Dataset gets
a DataLoader of the requested batch size, a DataLoader is used as given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from nas._errors import TaskError

if TYPE_CHECKING:
    import torch

__all__ = [
    "batches",
    "check_data",
    "first_inputs",
    "first_target",
    "is_pair",
    "loader_of",
]


def is_pair(data: Any) -> bool:
    """Whether ``data`` is the ``(X, y)`` tensor form."""
    import torch

    return (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(part, torch.Tensor) for part in data)
    )


def loader_of(data: Any, *, batch_size: int, shuffle: bool = False, seed: int = 0) -> Any:
    """An iterable of ``(inputs, targets)`` batches over ``data`` in any of its forms.

    A DataLoader comes back unchanged (its own batch size and order win); a Dataset or a
    tensor pair gets a DataLoader, shuffled with a seeded generator when ``shuffle``.
    """
    import torch
    from torch.utils.data import DataLoader, IterableDataset, TensorDataset

    if isinstance(data, DataLoader):
        return data
    dataset = TensorDataset(*data) if is_pair(data) else data
    shuffle = shuffle and not isinstance(dataset, IterableDataset)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def batches(loader: Any) -> Iterator[tuple[torch.Tensor, Any]]:
    """``(inputs, targets)`` of each batch of ``loader`` (inputs as float tensors)."""
    for batch in loader:
        inputs, targets = batch
        yield inputs, targets


def first_inputs(data: Any, n: int, *, batch_size: int = 64) -> torch.Tensor:
    """The first ``n`` inputs of ``data`` as one tensor (int8 calibration samples)."""
    import torch

    if is_pair(data):
        head: torch.Tensor = data[0][:n].clone()
        return head
    parts: list[torch.Tensor] = []
    count = 0
    for inputs, _ in batches(loader_of(data, batch_size=min(batch_size, n))):
        parts.append(inputs[: n - count])
        count += len(parts[-1])
        if count >= n:
            break
    return torch.cat(parts).float()


def first_target(data: Any) -> Any:
    """The targets of the first batch (or item) of ``data``."""
    if is_pair(data):
        return data[1][:1]
    return next(iter(batches(loader_of(data, batch_size=1))))[1]


def check_data(task: str, part: str, data: Any, example_input: torch.Tensor) -> None:
    """Check that ``data`` yields ``(input, target)`` pairs shaped like ``example_input``.

    Looks at one item of a Dataset, or the first batch of a DataLoader; reads nothing more.

    Raises:
        TaskError: naming the task, the part (``train``, ``val``, ``calibration``) and the
            item or batch at fault.
    """
    import torch
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    where = f"Task {task!r}: {part}"
    shape_of: Callable[[Any], tuple[int, ...]] = tuple
    if isinstance(data, DataLoader):
        what, sample = "loader batch 0", _first(data, f"{where} loader")
    elif isinstance(data, IterableDataset):
        what, sample = "dataset item 0", _first(data, f"{where} dataset")
        shape_of = _batched
    elif isinstance(data, Dataset):
        if hasattr(data, "__len__") and len(data) == 0:
            raise TaskError(f"{where} dataset is empty; it needs at least one item.")
        try:
            sample = data[0]
        except Exception as exc:
            raise TaskError(f"{where} dataset[0] raised {type(exc).__name__}: {exc}") from exc
        what, shape_of = "dataset item 0", _batched
    else:
        raise TaskError(
            f"{where} must be a tuple (X, y) of tensors, a torch.utils.data.Dataset or a "
            f"DataLoader, got {type(data).__name__}."
        )
    if not (isinstance(sample, (tuple, list)) and len(sample) == 2):
        got = f"{type(sample).__name__} of length {len(sample)}" if isinstance(
            sample, (tuple, list)) else type(sample).__name__  # fmt: skip
        raise TaskError(
            f"{where} {what} must be an (input, target) pair, got {got}. Return "
            "(input, target) from __getitem__ (or collate batches into that pair)."
        )
    inputs = sample[0]
    if not (isinstance(inputs, torch.Tensor) and inputs.is_floating_point()):
        raise TaskError(
            f"{where} {what} input must be a float tensor, got {type(inputs).__name__} "
            f"{getattr(inputs, 'dtype', '')}."
        )
    shape = shape_of(inputs.shape)
    if shape[1:] != tuple(example_input.shape[1:]):
        raise TaskError(
            f"{where} {what} input has shape {shape} (as a batch), which disagrees with "
            f"example_input {tuple(example_input.shape)}: every dimension but the batch must "
            "match."
        )


def _batched(shape: Any) -> tuple[int, ...]:
    return (1, *tuple(shape))


def _first(data: Any, where: str) -> Any:
    try:
        return next(iter(data))
    except StopIteration:
        raise TaskError(f"{where} is empty; it needs at least one batch.") from None
    except Exception as exc:
        raise TaskError(f"{where} raised {type(exc).__name__} on its first batch: {exc}") from exc
