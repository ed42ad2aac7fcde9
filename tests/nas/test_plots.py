"""Pictures of the front: pairwise panels, tooltips, base point, budget lines, PNG."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from _front_data import make_results

from nas import UsageError
from nas._plots import front_html, nice_ticks, objective_pairs, plot_front


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.titles: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.titles.append(data)


def test_objective_pairs() -> None:
    assert objective_pairs(["accuracy", "latency_ms"]) == [("latency_ms", "accuracy")]
    assert len(objective_pairs(["accuracy", "latency_ms", "memory_mb"])) == 3
    assert len(objective_pairs(["accuracy", "latency_ms", "memory_mb", "energy_mj"])) == 6
    assert objective_pairs(["latency_ms", "memory_mb"]) == [("latency_ms", "memory_mb")]


def test_nice_ticks() -> None:
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ticks = nice_ticks(0.13, 0.97)
    assert ticks[0] >= 0.13 and ticks[-1] <= 0.97 and 3 <= len(ticks) <= 8


@pytest.mark.parametrize(
    "objectives", [("accuracy", "latency_ms"), ("accuracy", "latency_ms", "memory_mb")]
)
def test_front_html_has_panels_tooltips_base_and_budget(objectives: tuple[str, ...]) -> None:
    res = make_results(15, objectives=objectives)
    page = front_html(res)
    parser = _Collect()
    parser.feed(page)
    panels = [a for t, a in parser.tags if t == "svg" and a.get("class") == "panel"]
    assert len(panels) == len(objective_pairs(objectives))
    groups = [a for t, a in parser.tags if t == "g" and "trial" in (a.get("class") or "")]
    assert len(groups) == 15 * len(panels)
    front = {r.number for r in res.rows if r.pareto}
    assert {int(a["data-trial"]) for a in groups if "front" in a["class"]} == front
    assert any("infeasible" in a["class"] for a in groups)
    assert any(t.startswith(f"trial {min(front)}") and "width" in t for t in parser.titles)
    assert any(t.startswith("base model") for t in parser.titles)
    assert any(t.startswith("budget: latency_ms <= 0.8") for t in parser.titles)
    assert any(t.startswith("budget: accuracy >= 94") for t in parser.titles)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page


def test_plot_files(tmp_path: Path) -> None:
    res = make_results(15)
    png = plot_front(res, tmp_path / "front.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[1] > 600  # three panels side by side
    svg = plot_front(res, tmp_path / "front.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<svg") == 4
    html = plot_front(res, tmp_path / "front.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    with pytest.raises(UsageError, match=r"must end in one of \['.html'"):
        plot_front(res, tmp_path / "front.pdf")
