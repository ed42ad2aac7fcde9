"""Compression kinds as plug-ins: a kind added in one module samples, applies and exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import archs
import numpy as np
import onnx
import onnxruntime as ort
import optuna
import pytest
import torch
from _extra_kind import METADATA_KEY, ONNX_OPS, ActivationKind
from conftest import built
from torch import nn

from search_spaces import (
    CompressionConfig,
    CompressionSpace,
    InvalidConfigError,
    UnknownKindError,
    analyze,
    export_onnx,
    get_kind,
    kind_names,
    register_kind,
    unregister_kind,
)

BUILTIN = ["bits", "drop", "rank", "width"]


@pytest.fixture
def activation_kind() -> Iterator[type[ActivationKind]]:
    register_kind(ActivationKind)
    try:
        yield ActivationKind
    finally:
        unregister_kind(ActivationKind.name)
    assert kind_names() == BUILTIN


def _resnet() -> tuple[nn.Module, torch.Tensor, CompressionSpace]:
    torch.manual_seed(0)
    model = archs.randomize_bn(archs.ResNet18(width=16)).eval()
    x = torch.randn(2, 3, 32, 32)
    return model, x, analyze(model, x[:1])


def _node_of(proto: onnx.ModelProto, path: str, op: str) -> bool:
    parent, _, leaf = path.rpartition(".")
    scope = f"/{parent}/{leaf}/" if parent else f"/{leaf}/"
    pattern = re.compile(rf"{re.escape(scope)}{op}(_\d+)?$")
    return any(n.op_type == op and pattern.search(n.name) for n in proto.graph.node)


def test_extra_kind_samples_applies_and_exports(
    activation_kind: type[ActivationKind], tmp_path: Path
) -> None:
    model, x, space = _resnet()
    assert "act" in space.kinds and "act.layer1.0.relu" in space.param_names()
    assert "activations point" in space.describe() and "9 activations" in repr(space)
    names = space.param_names()
    kinds_in_order = list(dict.fromkeys(n.partition(".")[0] for n in names))
    assert kinds_in_order == ["width", "drop", "act", "rank", "bits"]  # by their order

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):  # drawn through optuna; stored params rebuild the same config
        trial = study.ask()
        config = space.sample(trial)
        assert set(trial.params) == set(names)
        assert config.extra["activations"] == {
            k.removeprefix("act."): v for k, v in trial.params.items() if k.startswith("act.")
        }
        assert space.config_from_params(trial.params) == config

    chosen = {"relu": "hardswish", "layer1.0.relu": "leaky_relu", "layer4.1.relu": "hardswish"}
    params = space.params_of(CompressionConfig(extra={"activations": chosen}))
    params |= {"width.conv1": 8, "drop.layer4.1": True}
    study.enqueue_trial(params)
    config = space.sample(study.ask())
    assert dict(config.value("activations")) == chosen | {
        p: "relu" for p in space.kinds["act"].choices if p not in chosen
    }
    assert "3/9 activations changed" in space.summarize(config)

    compressed = space.apply(model, config)
    assert isinstance(compressed.relu, nn.Hardswish)
    assert isinstance(compressed.layer1[0].relu, nn.LeakyReLU)
    assert isinstance(compressed.layer4[1], nn.Identity)  # its ReLU went with it
    assert type(model.relu) is nn.ReLU  # the base model is untouched
    without = space.apply(
        model, CompressionConfig(widths={"conv1": 8}, dropped_blocks={"layer4.1"})
    )
    assert not torch.allclose(compressed(x), without(x))

    graph = export_onnx(compressed, config, x[:1], tmp_path / "act.onnx")
    proto = onnx.load(str(graph.path))
    assert _node_of(proto, "relu", ONNX_OPS["hardswish"])
    assert _node_of(proto, "layer1.0.relu", ONNX_OPS["leaky_relu"])
    assert _node_of(proto, "layer1.1.relu", ONNX_OPS["relu"])
    assert json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY]) == dict(
        config.value("activations")
    )
    session = ort.InferenceSession(str(graph.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x[:1].numpy()})[0]
    np.testing.assert_allclose(got, compressed(x[:1]).detach().numpy(), atol=1e-5)


def test_extra_kind_round_trips_through_json(activation_kind: type[ActivationKind]) -> None:
    config = CompressionConfig(
        widths={"conv1": 8}, extra={"activations": {"relu": "hardswish", "layer1.0.relu": "relu"}}
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert data["activations"] == {"layer1.0.relu": "relu", "relu": "hardswish"}
    again = CompressionConfig.from_dict(data)
    assert again == config and hash(again) == hash(config)
    assert CompressionConfig(extra={"activations": {}}) == CompressionConfig()
    assert "activations" not in CompressionConfig().to_dict()


def test_identity_with_extra_kind_reproduces_base(activation_kind: type[ActivationKind]) -> None:
    model, x, space = _resnet()
    identity = space.identity()
    assert set(identity.value("activations").values()) == {"relu"}
    torch.testing.assert_close(space.apply(model, identity)(x), model(x), atol=1e-6, rtol=0)


def test_unknown_kind_key_names_it_and_the_registered_kinds() -> None:
    data = {"widths": {}, "activations": {"relu": "hardswish"}}
    with pytest.raises(
        InvalidConfigError,
        match=r"unknown CompressionConfig keys \['activations'\].*"
        r"registered compression kinds: \['bits', 'drop', 'rank', 'width'\]",
    ):
        CompressionConfig.from_dict(data)
    with pytest.raises(InvalidConfigError, match=r"extra names 'activations'.*register_kind"):
        CompressionConfig(extra={"activations": {}})
    with pytest.raises(InvalidConfigError, match=r"'widths' is a field: pass widths="):
        CompressionConfig(extra={"widths": {"conv1": 8}})
    with pytest.raises(InvalidConfigError, match=r"no value for 'activations'"):
        CompressionConfig().value("activations")


def test_space_built_before_registration_rejects_the_kind(request: pytest.FixtureRequest) -> None:
    space = built("resnet18").space  # built without the extra kind (and cached: keep it so)
    request.getfixturevalue("activation_kind")
    assert "act" not in space.kinds
    config = CompressionConfig(extra={"activations": {"relu": "hardswish"}})
    with pytest.raises(InvalidConfigError, match=r"'activations'.*registered after this space"):
        space.validate(config)


def test_bad_extra_values_name_point_and_choices(activation_kind: type[ActivationKind]) -> None:
    _, _, space = _resnet()
    with pytest.raises(InvalidConfigError, match=r"activations\['relu'\] = 'gelu' is not offered"):
        space.validate(CompressionConfig(extra={"activations": {"relu": "gelu"}}))
    with pytest.raises(InvalidConfigError, match=r"activations names 'fc'.*valid keys"):
        space.validate(CompressionConfig(extra={"activations": {"fc": "relu"}}))


def test_registry_rejects_duplicates_and_guards_builtins(
    activation_kind: type[ActivationKind],
) -> None:
    with pytest.raises(ValueError, match="'act' is already registered"):
        register_kind(ActivationKind)

    class Clash(ActivationKind):
        name = "clash"

    with pytest.raises(ValueError, match=r"config key 'activations' .* is taken by kind 'act'"):
        register_kind(Clash)
    with pytest.raises(ValueError, match="built-in"):
        unregister_kind("width")
    with pytest.raises(UnknownKindError, match=r"unknown compression kind 'widht'.*'width'"):
        get_kind("widht")
    assert get_kind("act") is ActivationKind and kind_names() == sorted([*BUILTIN, "act"])


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_kind_values_round_trip(name: str) -> None:
    kind = built("resnet18").space.kinds[name]
    for value in (kind.identity(), kind.smallest(), kind.empty()):
        frozen = kind.freeze(value)
        again = kind.from_json(json.loads(json.dumps(kind.to_json(frozen))))
        assert again == frozen
        kind.validate(frozen)
