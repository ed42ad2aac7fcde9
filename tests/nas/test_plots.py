"""Pictures of the front: the figure data, the self-contained page, PNG and SVG files."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from _front_data import make_results

from nas import UsageError
from nas.results._plots import figure_html, front_figure, front_html, objective_pairs, plot_front


def test_objective_pairs() -> None:
    assert objective_pairs(["accuracy", "latency_ms"]) == [("latency_ms", "accuracy")]
    assert len(objective_pairs(["accuracy", "latency_ms", "memory_mb"])) == 3
    assert len(objective_pairs(["accuracy", "latency_ms", "memory_mb", "energy_mj"])) == 6
    assert objective_pairs(["latency_ms", "memory_mb"]) == [("latency_ms", "memory_mb")]


@pytest.mark.parametrize(
    "objectives", [("accuracy", "latency_ms"), ("accuracy", "latency_ms", "memory_mb")]
)
def test_front_figure_has_every_trial_base_and_budget(objectives: tuple[str, ...]) -> None:
    res = make_results(15, objectives=objectives)
    fig = front_figure(res)
    assert fig["pairs"] == objective_pairs(objectives)
    assert [t["number"] for t in fig["trials"]] == list(range(15))
    front = {r.number for r in res.rows if r.pareto}
    assert {t["number"] for t in fig["trials"] if t["cls"] == "front"} == front
    assert any(t["cls"] == "infeasible" and t["violations"] for t in fig["trials"])
    assert fig["limits"]["latency_ms"] == {"value": 0.8, "op": "<="}
    assert fig["limits"]["accuracy"] == {"value": 94.0, "op": ">="}
    assert fig["base"]["latency_ms"] == 1.0 and fig["base"]["accuracy"] == 97.0
    measured = next(t for t in fig["trials"] if t["cls"] == "front")
    row = res.trial(measured["number"])
    # the search used predicted costs: the ring is the measured latency
    assert measured["predicted"]["latency_ms"] == row.values["latency_ms"]
    assert measured["other"]["latency_ms"] == pytest.approx(row.values["latency_ms"] * 1.05)
    assert all("width" in t["summary"] for t in fig["trials"])


def test_front_figure_of_measured_costs_rings_the_prediction() -> None:
    res = make_results(6)
    rows = tuple(
        replace(
            r,
            cost_source="measured",
            predicted={"latency_ms": 2 * r.values["latency_ms"]},
            measured={"latency_ms": r.values["latency_ms"]},
        )
        for r in res.rows
    )
    fig = front_figure(res.replace(rows=rows))
    for t, r in zip(fig["trials"], rows, strict=True):
        assert t["source"] == "measured"
        assert t["measured"]["latency_ms"] == r.values["latency_ms"]
        assert (
            t["other"]["latency_ms"] == t["predicted"]["latency_ms"] == 2 * r.values["latency_ms"]
        )
    # the base model is drawn at its measured cost, like the trials
    assert fig["base"]["latency_ms"] == 1.1


def test_figure_json_cannot_close_its_script() -> None:
    res = make_results(4)
    rows = (replace(res.rows[0], summary="</script><script>alert(1)</script>"), *res.rows[1:])
    page = figure_html(front_figure(res.replace(rows=rows)))
    assert page.count("</script>") == 1
    data = re.search(r'<script type="application/json">(.*?)</script>', page, re.S)
    assert data is not None
    assert json.loads(data.group(1))["trials"][0]["summary"].startswith("</script>")


def test_front_html_is_one_offline_file() -> None:
    page = front_html(make_results(15))
    assert page.startswith("<!DOCTYPE html>")
    assert "drawFront" in page  # the renderer is inlined, not loaded
    assert "<script src" not in page and "<link" not in page
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)
    assert "budget latency_ms &lt;= 0.8, accuracy_drop &lt;= 3" in page


def test_plot_files(tmp_path: Path) -> None:
    res = make_results(15)
    png = plot_front(res, tmp_path / "front.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[1] > 600  # three panels side by side
    svg = plot_front(res, tmp_path / "front.svg").read_text()
    assert "<svg" in svg[:500] and "Pareto front of synthetic" in svg
    html = plot_front(res, tmp_path / "front.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    with pytest.raises(UsageError, match=r"must end in one of \['.html'"):
        plot_front(res, tmp_path / "front.pdf")
