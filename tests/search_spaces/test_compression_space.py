"""CompressionSpace: identity, baselines, sampling, validation, description."""

from __future__ import annotations

import optuna
import pytest
import torch
from conftest import Built, built

from search_spaces import CompressionConfig, InvalidConfigError, analyze


def test_identity_reproduces_base_outputs(arch: Built) -> None:
    model = arch.space.apply(arch.model, arch.space.identity())
    torch.testing.assert_close(model(arch.batch), arch.model(arch.batch), atol=1e-6, rtol=0)


def test_apply_leaves_base_untouched() -> None:
    b = built("resnet18")
    before = {k: v.clone() for k, v in b.model.state_dict().items()}
    b.space.apply(b.model, b.space.smallest())
    after = b.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_baselines_are_valid_and_shrink(arch: Built) -> None:
    space = arch.space
    base = sum(p.numel() for p in arch.model.parameters())
    for config in (space.uniform(width=0.5), space.uniform(rank=0.25), space.smallest()):
        space.validate(config)
        model = space.apply(arch.model, config)
        assert model(arch.x).shape == arch.model(arch.x).shape
        assert sum(p.numel() for p in model.parameters()) <= base


def test_cheapest_candidates_try_int8_and_low_rank_at_both_ends() -> None:
    space = built("resnet18").space
    smallest = space.smallest()
    candidates = space.cheapest_candidates()
    assert candidates[0] == smallest and len(candidates) == 4
    for config in candidates:  # narrowest widths, every block dropped in each
        assert config.widths == smallest.widths
        assert config.dropped_blocks == smallest.dropped_blocks
    ends = {
        (max(c.bits.values()) < 32, any(r is not None for r in c.ranks.values()))
        for c in candidates
    }
    assert ends == {(True, True), (False, True), (True, False), (False, False)}
    # a space with neither kind to swing has its smallest config alone
    plain = analyze(
        torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3)),
        torch.randn(1, 3, 8, 8),
        bits=(32,),
    )
    assert plain.cheapest_candidates() == [plain.smallest()]


def test_uniform_width_rounds_to_alignment() -> None:
    space = built("resnet18").space
    config = space.uniform(width=0.5)
    assert config.widths["conv1"] == 8 and config.widths["layer4.0.conv1"] == 64
    assert all(w % space.align == 0 for w in config.widths.values())


def test_sample_uses_stable_names_and_rebuilds_from_params() -> None:
    space = built("mobilenetv2").space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    names = set()
    for _ in range(3):
        trial = study.ask()
        config = space.sample(trial)
        names.add(tuple(sorted(trial.params)))
        assert space.config_from_params(trial.params) == config
    assert names == {tuple(sorted(space.param_names()))}
    assert all("." in n for n in space.param_names())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"widths": {"nope": 8}}, r"widths names 'nope'.*valid keys"),
        (
            {"widths": {"conv1": 12}},
            r"widths\['conv1'\] = 12 is not offered; allowed: multiples of 8",
        ),
        ({"widths": {"conv1": 24}}, r"widths\['conv1'\] = 24 .*from 8 to 16"),
        ({"ranks": {"layer2.0.conv1": 9}}, r"ranks\['layer2.0.conv1'\] = 9 .*allowed: \[None"),
        ({"bits": {"layer1.0.conv1": 4}}, r"bits\['layer1.0.conv1'\] = 4 .*allowed: \[32, 8\]"),
        ({"bits": {"fc": 16}}, r"bits\['fc'\] = 16 .*allowed: \[32, 8, 4\]"),
        ({"dropped_blocks": {"layer2.0"}}, r"'layer2.0', which is not a removable block"),
    ],
)
def test_bad_configs_name_key_value_and_choices(change: dict, match: str) -> None:
    space = built("resnet18").space
    with pytest.raises(InvalidConfigError, match=match):
        space.validate(CompressionConfig(**change))
    with pytest.raises(ValueError, match=match):
        space.apply(built("resnet18").model, CompressionConfig(**change))


def test_config_from_params_rejects_unknown_and_missing() -> None:
    space = built("vgg").space
    params = {n: 32 for n in space.param_names() if n.startswith("bits")}
    with pytest.raises(InvalidConfigError, match="cannot rebuild"):
        space.config_from_params(params)
    with pytest.raises(InvalidConfigError, match=r"unknown parameters \['width.feature.0'\]"):
        space.config_from_params({"width.feature.0": 8})


def test_rank_that_no_longer_saves_is_skipped() -> None:
    b = built("vgg")
    rank = max(c for c in b.space.ranks["features.12"] if c is not None)
    config = CompressionConfig(
        widths={"features.9": 8, "features.12": 8}, ranks={"features.12": rank}
    )
    model = b.space.apply(b.model, config)
    assert "features.12" not in b.space.effective_ranks(model)
    config = CompressionConfig(ranks={"features.12": rank})
    model = b.space.apply(b.model, config)
    assert b.space.effective_ranks(model) == {"features.12": rank}


def test_low_rank_is_close_at_full_rank() -> None:
    from search_spaces._apply import factorize

    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    x = torch.randn(1, 8, 6, 6)
    torch.testing.assert_close(factorize(conv, 16)(x), conv(x), atol=1e-5, rtol=1e-4)
    lin = torch.nn.Linear(12, 10)
    y = torch.randn(3, 12)
    torch.testing.assert_close(factorize(lin, 10)(y), lin(y), atol=1e-5, rtol=1e-4)


def test_drop_block_replaces_it_by_identity() -> None:
    b = built("resnet18")
    model = b.space.apply(b.model, CompressionConfig(dropped_blocks={"layer1.1"}))
    assert isinstance(model.layer1[1], torch.nn.Identity)
    assert model(b.x).shape == (1, 10)


def test_describe_and_summarize() -> None:
    space = built("resnet18").space
    text = space.describe()
    for needle in ("channel groups", "layer1.0.conv1", "MMACs", "removable blocks", "frozen"):
        assert needle in text
    assert space.base_macs > 0 and space.base_params > 0
    line = space.summarize(space.uniform(width=0.5, bits=8))
    assert line.startswith("width 0.5") and "21/21 layers int8" in line
    assert "5 blocks dropped" in space.summarize(space.smallest())


@pytest.mark.parametrize("family", ["resnet", "mobilenetv2"])
def test_bundled_model_families(family: str) -> None:
    models = pytest.importorskip("nas.tasks._models")
    torch.manual_seed(0)
    model = models.build_model(family).eval()
    x = torch.randn(2, 1, 28, 28)
    space = analyze(model, x[:1])
    assert space.groups and space.blocks
    torch.testing.assert_close(
        space.apply(model, space.identity())(x), model(x), atol=1e-6, rtol=0
    )
    assert space.apply(model, space.smallest())(x).shape == model(x).shape


def test_factorized_conv_keeps_padding_mode() -> None:
    from search_spaces._apply import factorize

    conv = torch.nn.Conv2d(8, 16, 3, padding=1, padding_mode="reflect")
    x = torch.randn(1, 8, 6, 6)
    torch.testing.assert_close(factorize(conv, 8)(x).shape, conv(x).shape)
    torch.testing.assert_close(factorize(conv, 16)(x), conv(x), atol=1e-5, rtol=1e-4)
