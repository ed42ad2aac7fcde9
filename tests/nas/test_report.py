"""The HTML report: hypervolume, predictor error, per-layer policy, self-contained page."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from _front_data import make_fake_run, make_results
from _measured_run import PREDICTION_ERROR, make_measured_run
from _real_run import real_run

from nas import RunError, UsageError
from nas.results._hypervolume import (
    hypervolume,
    hypervolume_history,
    hypervolume_reference,
    normalised_losses,
)
from nas.results._pareto import read_run
from nas.results._report import (
    error_summary,
    latency_errors,
    policy,
    predictor_errors,
    write_report,
)


def test_hypervolume_known_values() -> None:
    assert hypervolume([[0.5, 0.5]], [1, 1]) == pytest.approx(0.25)
    assert hypervolume([[0.2, 0.6], [0.6, 0.2]], [1, 1]) == pytest.approx(0.48)
    assert hypervolume([[1.2, 0.1]], [1, 1]) == 0.0  # outside the reference box
    assert hypervolume([[0.5, 0.5, 0.5]], [1, 1, 1]) == pytest.approx(0.125)
    assert hypervolume([[0.2, 0.6, 0.5], [0.6, 0.2, 0.5]], [1, 1, 1]) == pytest.approx(0.24)


def _inclusion_exclusion(points: Sequence[Sequence[float]], ref: Sequence[float]) -> float:
    total = 0.0
    for k in range(1, len(points) + 1):
        for subset in itertools.combinations(points, k):
            corner = [max(c) for c in zip(*subset, strict=True)]
            volume = 1.0
            for c, r in zip(corner, ref, strict=True):
                volume *= max(r - c, 0.0)
            total += (-1) ** (k + 1) * volume
    return total


@pytest.mark.parametrize("dims", [2, 3, 4])
def test_hypervolume_matches_inclusion_exclusion(dims: int) -> None:
    rng = random.Random(dims)
    for _ in range(20):
        points = [[rng.random() for _ in range(dims)] for _ in range(rng.randint(1, 7))]
        ref = [1.0] * dims
        assert hypervolume(points, ref) == pytest.approx(_inclusion_exclusion(points, ref))


def test_hypervolume_history_is_monotone_and_matches_front() -> None:
    res = make_results(25)
    hist = hypervolume_history(res)
    assert [n for n, _ in hist] == sorted(r.number for r in res.rows)
    hvs = [h for _, h in hist]
    assert all(b >= a for a, b in itertools.pairwise(hvs))
    feasible = [r for r in res.rows if r.budget_met]
    ref = hypervolume_reference(res)
    assert hvs[-1] == pytest.approx(hypervolume(normalised_losses(res, feasible), ref))
    assert hvs[-1] > 0


def test_hypervolume_of_an_unbudgeted_run_grows_from_the_first_trial() -> None:
    # Every trial is slower than the base model: a reference at the base model's cost
    # would leave the hypervolume at zero. The reference does not depend on the budget.
    res = make_results(12)
    slow = tuple(
        replace(r, budget_met=True, values={**r.values, "latency_ms": r.values["latency_ms"] + 1})
        for r in res.rows
    )
    res = res.replace(rows=slow, budget={})
    hist = hypervolume_history(res)
    assert hist[0][1] > 0
    assert hist[-1][1] > hist[0][1]


def test_predictor_errors_of_predicted_costs() -> None:
    res = make_results(25)
    errs = predictor_errors(res)
    front = [r for r in res.rows if r.pareto]
    assert len(errs) == len(front)  # latency measured on the front only
    assert all(e["error_pct"] == pytest.approx(100 * (1 / 1.05 - 1)) for e in errs)
    summary = error_summary(errs)
    assert summary["latency_ms"]["within_10"] == 100.0


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("runs") / "fake", n=14)


@pytest.fixture(scope="module")
def measured_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_measured_run(tmp_path_factory.mktemp("runs") / "measured", n=10)


def test_measured_costs_are_read_and_compared(measured_run: Path) -> None:
    res = read_run(measured_run)
    assert {r.cost_source for r in res.rows} == {"measured"}
    errs = predictor_errors(res)
    assert len(errs) == 10 and {e["metric"] for e in errs} == {"latency_ms"}
    for e in errs:
        expected = PREDICTION_ERROR[e["trial"] % len(PREDICTION_ERROR)] * 100
        assert e["error_pct"] == pytest.approx(expected)
    tracked = latency_errors(res)
    assert [r["number"] for r in tracked] == list(range(10))
    assert [r["refit"] for r in tracked].count(True) == 2


def test_latency_errors_without_tracking_come_from_the_trials() -> None:
    res = make_results(25)
    records = latency_errors(res)
    assert [r["number"] for r in records] == sorted(r.number for r in res.rows if r.pareto)
    assert not any(r["refit"] for r in records)


def test_policy_uses_distributions_for_full_width(fake_run: Path) -> None:
    res = read_run(fake_run)
    pol = policy(res, res.best_trial())
    assert pol["widths"] and all(full == 32 for _, _, full in pol["widths"])
    assert {name for name, *_ in pol["layers"]} >= {"stem.conv", "fc"}


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        for key, value in attrs:
            if (
                key in ("src", "href", "xlink:href", "data")
                and value
                and (value.startswith(("http:", "https:", "//")))
            ):
                self.external.append(f"<{tag} {key}={value}>")
            if tag == "link" and key == "rel":
                self.external.append(f"<link rel={value}>")

    def figures(self) -> int:
        return sum(t == "div" and a.get("class") == "hwnas-figure" for t, a in self.tags)


def test_report_is_self_contained(measured_run: Path, tmp_path: Path) -> None:
    out = write_report(measured_run, tmp_path / "sub" / "report.html")
    page = out.read_text()
    parser = _Refs()
    parser.feed(page)
    assert parser.external == []
    assert "@import" not in page and not re.search(r"url\((?!#)", page)  # in-page refs only
    for heading in (
        "Settings",
        "Base model",
        "Pareto front",
        "Per-layer policy",
        "Predictor error",
        "Search history",
    ):
        assert f"<h2>{heading}</h2>" in page
    assert parser.figures() == 3  # front, predictor error, hypervolume
    assert "Failed trials" in page and "RuntimeError: boom" in page
    assert "Costs the search used: measured." in page
    assert "2 refit(s)" in page
    best = read_run(measured_run).best_trial().number
    assert f"trial {best}: the most accurate trial that meets the budget" in page


def test_the_base_models_drift_is_shown_in_table_and_report(tmp_path: Path) -> None:
    import optuna

    import nas

    run = make_measured_run(tmp_path / "drift", n=4)
    study = optuna.load_study(study_name="hwnas", storage=f"sqlite:///{run / 'study.db'}")
    study.set_user_attr(
        "base_drift",
        [{"candidates_measured": 10, "latency_ms": 0.5, "ratio": 0.96},
         {"candidates_measured": 20, "latency_ms": 0.7, "ratio": 1.31}],
    )  # fmt: skip
    shown = "base model measured again 2 times during the search: 0.96x to 1.31x"
    assert shown in nas.pareto_table(run)
    assert shown in write_report(run, tmp_path / "report.html").read_text()


def test_report_of_a_run_without_budget_says_none(tmp_path: Path) -> None:
    res = make_results(8).replace(budget={}, settings={"task": "t", "budget": {}})
    page = write_report(res, tmp_path / "r.html").read_text()
    assert "budget none;" in page
    assert "<td>budget</td><td>none</td>" in page
    assert "{}" not in re.sub(r"<script.*?</script>", "", page, flags=re.S)


def test_report_errors(fake_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="trial 77 is not a finished trial"):
        write_report(fake_run, tmp_path / "r.html", trial=77)
    with pytest.raises(UsageError, match="report is HTML"):
        write_report(fake_run, tmp_path / "r.pdf")
    page = write_report(fake_run, tmp_path / "r.html", trial=3).read_text()
    assert "trial 3, as requested" in page


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    for run_dir, _home in real_run(tmp_path_factory):
        yield run_dir


def test_report_of_a_real_run(real: Path, tmp_path: Path) -> None:
    from nas.cli import main

    out = tmp_path / "report.html"
    assert main(["report", str(real), "--out", str(out)]) == 0
    page = out.read_text()
    parser = _Refs()
    parser.feed(page)
    assert parser.external == []
    res = read_run(real)
    assert res.front() and all("latency_ms" in r.measured for r in res.front())
    errors = predictor_errors(res)
    assert {e["metric"] for e in errors} == {"latency_ms"}  # no energy meter here
    assert "<td>latency_ms</td>" in page
    pol = policy(res, res.best_trial())
    assert all(full is not None and kept <= full for _, kept, full in pol["widths"])
