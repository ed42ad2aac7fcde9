"""CompressionConfig: frozen, hashable, JSON round-trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from strategies import configs

from search_spaces import CompressionConfig, InvalidConfigError


@settings(max_examples=40, deadline=None)
@given(configs())
def test_json_round_trip(config: CompressionConfig) -> None:
    text = json.dumps(config.to_dict())
    again = CompressionConfig.from_dict(json.loads(text))
    assert again == config and hash(again) == hash(config)


def test_is_frozen_and_hashable() -> None:
    config = CompressionConfig(widths={"a": 8}, dropped_blocks={"b"})
    with pytest.raises(AttributeError):
        config.widths = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.widths["a"] = 16  # type: ignore[index]
    assert {config: 1}[CompressionConfig(widths={"a": 8}, dropped_blocks=frozenset({"b"}))] == 1
    assert config.to_dict()["_type"] == "CompressionConfig" and config.to_dict()["version"] == 1


def test_from_dict_rejects_unknown_keys_and_versions() -> None:
    with pytest.raises(InvalidConfigError, match=r"unknown CompressionConfig keys \['width'\]"):
        CompressionConfig.from_dict({"width": {}})
    with pytest.raises(InvalidConfigError, match="version 99 is not supported"):
        CompressionConfig.from_dict({"version": 99})
    with pytest.raises(TypeError, match="wrap it"):
        CompressionConfig(dropped_blocks="layer1.0")  # type: ignore[arg-type]
