"""The HTML report: hypervolume, predictor error, per-layer policy, self-contained page."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from _front_data import make_fake_run, make_results
from _real_run import real_run

from nas import RunError, UsageError
from nas._pareto import read_run
from nas._report import (
    error_summary,
    hypervolume,
    hypervolume_history,
    normalised_losses,
    policy,
    predictor_errors,
    write_report,
)


def test_hypervolume_2d_known_values() -> None:
    assert hypervolume([[0.5, 0.5]], [1, 1]) == pytest.approx(0.25)
    assert hypervolume([[0.2, 0.6], [0.6, 0.2]], [1, 1]) == pytest.approx(0.48)
    assert hypervolume([[1.2, 0.1]], [1, 1]) == 0.0  # outside the reference box


def test_hypervolume_history_is_monotone_and_matches_front() -> None:
    res = make_results(25)
    hist = hypervolume_history(res)
    assert [n for n, _ in hist] == sorted(r.number for r in res.rows)
    hvs = [h for _, h in hist]
    assert all(b >= a for a, b in itertools.pairwise(hvs))
    feasible = [r for r in res.rows if r.budget_met]
    assert hvs[-1] == pytest.approx(hypervolume(normalised_losses(res, feasible), [1, 1, 1]))
    assert 0 < hvs[-1] < 1


def test_predictor_errors() -> None:
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


def test_policy_uses_distributions_for_full_width(fake_run: Path) -> None:
    res = read_run(fake_run)
    pol = policy(res, res.best_trial())
    assert pol["widths"] and all(full == 32 for _, _, full in pol["widths"])
    assert {name for name, *_ in pol["layers"]} >= {"stem.conv", "fc"}


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for key, value in attrs:
            if (
                key in ("src", "href", "xlink:href", "data")
                and value
                and (value.startswith(("http:", "https:", "//")))
            ):
                self.external.append(f"<{tag} {key}={value}>")
            if tag == "link" and key == "rel":
                self.external.append(f"<link rel={value}>")


def test_report_is_self_contained(fake_run: Path, tmp_path: Path) -> None:
    out = write_report(fake_run, tmp_path / "sub" / "report.html")
    page = out.read_text()
    parser = _Refs()
    parser.feed(page)
    assert parser.external == []
    assert "@import" not in page and "url(" not in page
    for heading in (
        "Settings",
        "Base model",
        "Pareto front",
        "Per-layer policy",
        "Predictor error on the measured front",
        "Search history",
    ):
        assert f"<h2>{heading}</h2>" in page
    assert parser.tags.count("svg") >= 5  # 3 front panels, policy bars, history
    assert "Failed trials" in page and "RuntimeError: boom" in page
    best = read_run(fake_run).best_trial().number
    assert f"trial {best}: the most accurate trial that meets the budget" in page


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
