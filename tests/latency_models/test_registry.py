import pytest

from latency_models import DuplicateNameError, Registry, UnknownNameError


def test_unknown_name_lists_registered_and_closest() -> None:
    reg: Registry[int] = Registry("device")
    reg.add("pixel7-cpu", 1)
    reg.add("jetson-orin", 2)
    with pytest.raises(
        UnknownNameError,
        match=r"registered: \['jetson-orin', 'pixel7-cpu'\]\. Did you mean 'pixel7-cpu'",
    ):
        reg.get("pixel-7")
    with pytest.raises(KeyError):
        reg.get("nothing-like-it")


def test_duplicate_raises_and_names_are_sorted() -> None:
    reg: Registry[int] = Registry("task")
    reg.add("b", 1)
    reg.add("a", 2)
    with pytest.raises(DuplicateNameError, match="already registered"):
        reg.add("a", 3)
    assert reg.names() == ["a", "b"]
    assert reg.names("a*") == ["a"]
