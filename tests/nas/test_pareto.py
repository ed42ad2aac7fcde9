"""Reading a run and its Pareto front: pure filtering, formats, read-only access, errors."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pytest
from _front_data import make_fake_run, make_results

from nas import RunError, UsageError
from nas.results._pareto import format_rows, pareto_mask, read_run


def test_pareto_mask_mixed_directions_and_constraints() -> None:
    # (accuracy max, latency min)
    pts = [[90, 1.0], [95, 2.0], [89, 1.5], [96, 3.0], [99, 0.5], [95, 2.0]]
    feasible = [True, True, True, True, False, True]
    mask = pareto_mask(pts, ["maximize", "minimize"], feasible)
    # 4 is infeasible: never on the front, dominates nothing; 2 is dominated by 0;
    # 1 and 5 are identical and both kept
    assert mask == [True, True, False, True, False, True]


def test_pareto_mask_rejects_bad_direction() -> None:
    with pytest.raises(ValueError, match="direction must be"):
        pareto_mask([[1, 2]], ["max", "minimize"])


def test_pareto_mask_nan_is_never_on_front() -> None:
    assert pareto_mask([[float("nan"), 1.0], [1.0, 2.0]], ["maximize", "minimize"]) == [
        False,
        True,
    ]


def test_front_sorted_by_first_cost_and_feasible() -> None:
    res = make_results(20)
    front = res.front()
    assert front, "synthetic data has a front"
    lat = [r.values["latency_ms"] for r in front]
    assert lat == sorted(lat)
    assert all(r.budget_met for r in front)
    assert len(res.table_rows(include_all=True)) == 20


def test_formats_agree() -> None:
    res = make_results(20)
    table = format_rows(res, fmt="table")
    doc = json.loads(format_rows(res, fmt="json"))
    rows = list(csv.DictReader(io.StringIO(format_rows(res, fmt="csv"))))
    front = [r.number for r in res.front()]
    assert [t["number"] for t in doc["trials"]] == front
    assert [int(r["trial"]) for r in rows] == front
    lines = table.splitlines()[2 : 2 + len(front)]
    assert [int(line.split()[0]) for line in lines] == front
    assert "latency_ms pred" in table and "summary" in table
    assert rows[0]["latency_ms_measured"] != ""
    all_doc = json.loads(format_rows(res, include_all=True, fmt="json"))
    assert len(all_doc["trials"]) == 20
    assert {t["pareto"] for t in all_doc["trials"]} == {True, False}


def test_unknown_format() -> None:
    with pytest.raises(UsageError, match="unknown format 'xml'"):
        format_rows(make_results(3), fmt="xml")


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("runs") / "fake", n=12)


def test_read_run_does_not_modify(fake_run: Path) -> None:
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in fake_run.iterdir()}
    res = read_run(fake_run)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in fake_run.iterdir()}
    assert before == after
    assert len(res.rows) == 12 and res.n_failed == 1
    assert res.objectives == ("accuracy", "latency_ms", "memory_mb")
    assert res.base_value("latency_ms") == (1.0, 1.1)
    assert res.accuracy_floor() == pytest.approx(94.0)
    front = res.front()
    assert front and all(r.measured for r in front)
    assert res.trial(front[0].number) == front[0]


def test_read_run_while_writer_holds_lock(fake_run: Path) -> None:
    # a search that is in the middle of a write transaction must not block or break reading
    con = sqlite3.connect(fake_run / "study.db")
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("UPDATE studies SET study_name = study_name")
        assert len(read_run(fake_run).rows) == 12
    finally:
        con.rollback()
        con.close()


def test_bad_runs(tmp_path: Path, fake_run: Path) -> None:
    with pytest.raises(RunError, match="does not exist"):
        read_run(tmp_path / "nope")
    with pytest.raises(RunError, match=r"no study\.db"):
        read_run(tmp_path)
    empty = make_fake_run(tmp_path / "empty", n=0, n_failed=2)
    with pytest.raises(RunError, match="no finished trial"):
        read_run(empty)
    res = read_run(fake_run)
    with pytest.raises(RunError, match="trial 999 is not a finished trial"):
        res.trial(999)
    with pytest.raises(RunError, match=r"trial 12 .* failed"):
        res.trial(12)


def test_cli_pareto_json_and_table(
    fake_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nas.cli import main

    assert main(["pareto", str(fake_run)]) == 0
    table = capsys.readouterr().out
    assert main(["pareto", str(fake_run), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    numbers = [int(line.split()[0]) for line in table.splitlines()[2:-1]]
    assert numbers == [t["number"] for t in doc["trials"]]
    assert main(["pareto", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    png = tmp_path / "front.png"
    assert main(["pareto", str(fake_run), "--all", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["pareto", str(fake_run), "--plot", str(tmp_path / "front.gif")]) == 1
    assert "must end in .html, .svg or .png" in capsys.readouterr().err


def test_cost_source_picks_which_cost_the_values_are(tmp_path: Path) -> None:
    from _measured_run import PREDICTION_ERROR, make_measured_run

    res = read_run(make_measured_run(tmp_path / "measured", n=6))
    for row in res.rows:
        assert row.cost_source == "measured"
        pred, meas = row.cost("latency_ms")
        assert meas == row.values["latency_ms"]
        err = PREDICTION_ERROR[row.number % len(PREDICTION_ERROR)]
        assert pred == pytest.approx(meas * (1 + err))
    assert [t["number"] for t in res.predictor_tracking] == list(range(6))
    rows = list(csv.DictReader(io.StringIO(format_rows(res, include_all=True, fmt="csv"))))
    first = res.trial(int(rows[0]["trial"]))
    assert float(rows[0]["latency_ms_measured"]) == first.values["latency_ms"]
    assert float(rows[0]["latency_ms_predicted"]) == first.cost("latency_ms")[0]
    doc = json.loads(format_rows(res, fmt="json"))
    assert {t["cost_source"] for t in doc["trials"]} == {"measured"}


def test_old_runs_read_as_predicted(fake_run: Path) -> None:
    res = read_run(fake_run)
    assert {r.cost_source for r in res.rows} == {"predicted"}
    assert res.predictor_tracking == []
    row = res.front()[0]
    assert row.cost("latency_ms") == (row.values["latency_ms"], row.measured["latency_ms"])


def test_budget_text() -> None:
    from nas.results._pareto import budget_text

    assert budget_text({}) == "none"
    assert budget_text({"latency_ms": 0.8, "accuracy_drop": 3.0}) == (
        "latency_ms <= 0.8, accuracy_drop <= 3"
    )
    assert budget_text({"accuracy": 90.0}) == "accuracy >= 90"


def test_predictor_tracking_reads_refit_flags_and_refit_lists() -> None:

    trials = [
        {"number": n, "predicted_ms": 1.0, "measured_ms": 1.1, "error_pct": -9.1}
        for n in (0, 2, 3)
    ]
    flagged = [dict(trials[0], refit=True), *trials[1:]]
    res = make_results(3)
    by_flag = res.replace(user_attrs={"predictor_tracking": {"trials": flagged}})
    assert [r["refit"] for r in by_flag.predictor_tracking] == [True, False, False]
    listed = {"trials": trials, "refits": [{"after": 2}, {"after": 9}]}
    by_list = res.replace(user_attrs={"predictor_tracking": listed})
    assert [r["refit"] for r in by_list.predictor_tracking] == [False, True, False]
    assert res.replace(user_attrs={"predictor_tracking": "junk"}).predictor_tracking == []


def test_one_dominance_check_and_the_public_hypervolume() -> None:
    from nas.results import hypervolume
    from nas.searching._dominance import dominates

    assert dominates([1, 1], [1, 2]) and not dominates([1, 2], [1, 2])
    assert dominates([1, 2], [1, 2], weakly=True) and not dominates([2, 1], [1, 2], weakly=True)
    assert pareto_mask([[1, 2], [1, 2], [2, 3]], ["minimize", "minimize"]) == [True, True, False]
    assert hypervolume([[0.5, 0.5], [0.25, 0.75]], [1.0, 1.0]) == 0.25 + 0.25 * 0.25
