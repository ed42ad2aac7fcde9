"""The report and the front page in a real browser: headless Chromium, through DevTools.

CI installs Debian's ``chromium`` (see .ci/run); elsewhere these tests skip when it is not
installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _browser import Page, find_chromium
from _front_data import make_fake_run
from _measured_run import make_measured_run

from nas.results._pareto import read_run
from nas.results._report import write_report

N_TRIALS = 16


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    return binary


@pytest.fixture
def page(chromium: str) -> Iterator[Page]:
    with Page(chromium) as p:
        yield p


@pytest.fixture(scope="module")
def measured_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_measured_run(tmp_path_factory.mktemp("runs") / "measured", n=N_TRIALS)


MARKS_PER_PANEL = """Array.from(document.querySelectorAll("svg.panel")).map(
  (p) => p.querySelectorAll("g.trial circle.mark").length)"""
SHOWN_PER_PANEL = """Array.from(document.querySelectorAll("svg.panel")).map(
  (p) => Array.from(p.querySelectorAll("g.trial")).filter((g) => g.style.display !== "none")
    .length)"""
CENTRE_OF = """((sel) => { const e = document.querySelector(sel);
  e.scrollIntoView({ block: "center" }); const r = e.getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2]; })"""


def test_the_browser_check_sees_page_errors(page: Page, tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><script>console.error('logged'); nosuchname();</script>")
    page.load(bad)
    errors = page.errors()
    assert any("logged" in e for e in errors)
    assert any("nosuchname" in e for e in errors)


def test_report_loads_cleanly_and_draws_one_mark_per_trial(
    page: Page, measured_run: Path, tmp_path: Path
) -> None:
    res = read_run(measured_run)
    report = write_report(res, tmp_path / "report.html")
    page.load(report)
    assert page.errors() == []
    assert page.js(MARKS_PER_PANEL) == [N_TRIALS] * 3
    assert page.js('document.querySelectorAll("svg.panel line.budget").length') == 4
    assert page.js('document.querySelectorAll("svg.panel path.base").length') == 3
    # the predictor's error chart: a point per tracked trial for the calibrated and the
    # raw predictor, a dotted line per refit; the hypervolume is drawn
    errors = 'document.querySelectorAll("svg.line")[0]'
    assert page.js(f'{errors}.querySelectorAll("circle.point").length') == 2 * N_TRIALS
    assert page.js(f'{errors}.querySelectorAll("line.marker").length') == N_TRIALS // 5
    history = 'document.querySelectorAll("svg.line")[1]'
    assert len(page.js(f'{history}.querySelector("path").getAttribute("d")')) > 20


def test_hover_shows_predicted_and_measured(
    page: Page, measured_run: Path, tmp_path: Path
) -> None:
    res = read_run(measured_run)
    first = res.front()[0]
    page.load(write_report(res, tmp_path / "report.html"))
    x, y = page.js(f'{CENTRE_OF}("g.trial[data-trial=\\"{first.number}\\"] circle.mark")')
    page.hover(x, y)
    tip = page.js('document.querySelector(".hwnas-tip").innerText')
    assert page.js('document.querySelector(".hwnas-tip").style.display') == "block"
    assert tip.startswith(f"trial {first.number}") and first.summary in tip
    pred, meas = first.cost("latency_ms")
    assert "predicted" in tip and "measured" in tip
    assert f"{pred:.4g}" in tip and f"{meas:.4g}" in tip
    # the same trial lights up in every panel
    assert (
        page.js(f'document.querySelectorAll("g.trial.hl[data-trial=\\"{first.number}\\"]").length')
        == 3
    )
    assert page.errors() == []


def test_filters_show_the_front_or_the_trials_within_budget(
    page: Page, measured_run: Path, tmp_path: Path
) -> None:
    res = read_run(measured_run)
    page.load(write_report(res, tmp_path / "report.html"))
    page.js('document.querySelector("input[type=radio][value=front]").click()')
    assert page.js(SHOWN_PER_PANEL) == [len(res.front())] * 3
    page.js('document.querySelector("input[type=radio][value=budget]").click()')
    assert page.js(SHOWN_PER_PANEL) == [sum(r.budget_met for r in res.rows)] * 3
    page.js('document.querySelector("input[type=radio][value=all]").click()')
    assert page.js(SHOWN_PER_PANEL) == [N_TRIALS] * 3
    assert page.errors() == []


def test_pareto_plot_page_in_the_browser(page: Page, tmp_path: Path) -> None:
    from nas.cli import main

    run = make_fake_run(tmp_path / "run", n=9)
    out = tmp_path / "front.html"
    assert main(["pareto", str(run), "--plot", str(out)]) == 0
    page.load(out)
    assert page.errors() == []
    assert page.js(MARKS_PER_PANEL) == [9] * 3
