"""Errors a user can stumble on: one line naming the file or value and the fix, exit 1."""

import errno
import json
import os
from pathlib import Path

import optuna
import pytest

from latency_models import DEVICES, MeasurementStore
from latency_models.profiling._check import mlp
from nas._errors import RunError, TaskError, UnknownNameError
from nas.cli import main
from nas.results._export import load_exported, trusted_task_spec
from nas.searching._run import check_run_dir_writable, make_storage

pytestmark = pytest.mark.usefixtures("isolated_home")


def _run_folder(path: Path) -> Path:
    """A run folder with a real Optuna study of 20 finished trials (no training)."""
    path.mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(
        study_name="hwnas", storage=f"sqlite:///{path / 'study.db'}",
        directions=["maximize", "minimize"],
    )  # fmt: skip
    dist = {"x": optuna.distributions.FloatDistribution(0, 100)}
    for i in range(20):
        study.add_trial(
            optuna.trial.create_trial(params={"x": float(i)}, distributions=dist, values=[i, i])
        )
    (path / "settings.json").write_text(json.dumps({"task": "digits-resnet", "device": "x"}))
    return path


def _damage(db: Path, how: str) -> None:
    if how == "truncated":
        with open(db, "r+b") as f:
            f.truncate(db.stat().st_size // 2)
    elif how == "zero bytes":
        db.write_bytes(b"")
    else:
        db.write_bytes(os.urandom(50_000))


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: error: ") and "\n" not in err, err
    assert "Traceback" not in err and "usage:" not in err
    return err


@pytest.mark.parametrize("how", ["truncated", "zero bytes", "random bytes"])
def test_a_damaged_study_db_is_one_line_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    run = _run_folder(tmp_path / "run")
    assert main(["pareto", str(run)]) == 0
    capsys.readouterr()
    _damage(run / "study.db", how)
    commands = [
        ["pareto", str(run)],
        ["report", str(run), "--out", str(tmp_path / "r.html")],
        ["export", str(run), "--out", str(tmp_path / "exported")],
    ]
    for argv in commands:
        assert main(argv) == 1
        err = _one_line_error(capsys)
        assert "study.db" in err and ("damaged" in err or "empty" in err or "not an SQLite" in err)
        assert "exceeding max length" not in err and "SELECT" not in err
    assert not (tmp_path / "exported").exists()


def test_storage_and_run_study_translate_damage(tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    db.write_bytes(os.urandom(4096))
    with pytest.raises(RunError, match="is not an SQLite database"):
        make_storage(f"sqlite:///{db}")
    run = _run_folder(tmp_path / "run")
    _damage(run / "study.db", "truncated")
    from nas.searching._run import open_run

    with pytest.raises(RunError, match=r"is damaged \(database disk image is malformed\)"):
        open_run(run).study  # noqa: B018


def test_run_dir_writability_is_checked_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_run_dir_writable(tmp_path / "new" / "run")
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match=r"cannot write to the run folder .*file/run"):
        check_run_dir_writable(tmp_path / "file" / "run")
    with pytest.raises(RunError, match="cannot write to the run folder '/sys/hwnas"):
        check_run_dir_writable("/sys/hwnas-run")  # read-only, even for root

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("nas.searching._run.os.fsync", full)
    with pytest.raises(RunError, match="No space left on device; free some space"):
        check_run_dir_writable(tmp_path / "run2")


def test_export_refuses_an_unwritable_target_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run_folder(tmp_path / "run")
    assert main(["export", str(run), "--out", "/sys/hwnas-out/model"]) == 1
    assert "cannot write into '/sys/hwnas-out'" in _one_line_error(capsys)


def test_export_into_an_existing_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run_folder(tmp_path / "run")
    (tmp_path / "out").mkdir()
    assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 1
    assert "already exists; pass --force" in _one_line_error(capsys)


def test_an_os_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(mlp(8, 1).SerializeToString())
    MeasurementStore("local-cpu").put(model, _measured(model))
    assert main(["device", "export", "local-cpu", "/sys/hwnas-x/r.jsonl"]) == 1
    err = _one_line_error(capsys)
    assert "'/sys/hwnas-x'" in err and "use a folder you may write to" in err


def _measured(model: Path):  # type: ignore[no-untyped-def]
    from latency_models import measure

    return measure(model, "local-cpu", max_seconds=0.05, warmup_s=0.01)


# --- device import / records / remove ------------------------------------------------------
def test_import_errors_are_one_line_without_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.onnx").write_bytes(mlp(8, 1).SerializeToString())
    cases = {
        '{"onnx": "m.onnx", "latency_ms": 1,}': "r.jsonl:1: not JSON (",
        '{"onnx": "/etc/passwd", "latency_ms": 1}': "is outside the folder",
        '{"onnx": "m.onnx", "latency_ms": 1, "energy_mj": "abc"}': '"energy_mj" must be a number',
    }
    for line, message in cases.items():
        (tmp_path / "r.jsonl").write_text(line + "\n")
        assert main(["device", "import", "local-cpu", str(tmp_path / "r.jsonl")]) == 1
        assert message in _one_line_error(capsys)
    assert main(["device", "import", "local-cpu", str(tmp_path / "none.jsonl")]) == 1
    assert "does not exist" in _one_line_error(capsys)


def test_records_lists_and_removes_unreadable_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = MeasurementStore("local-cpu")
    model = tmp_path / "m.onnx"
    model.write_bytes(mlp(8, 1).SerializeToString())
    good = store.put(model, _measured(model))
    bad = store.put(b"not onnx\n", _measured(model))  # as imports stored before checks
    assert main(["device", "records", "local-cpu"]) == 0
    out, err = capsys.readouterr()
    assert f"{good:>6}" in out and "not an ONNX model" in out
    assert f"--remove {bad}" in err
    assert main(["device", "records", "local-cpu", "--remove", str(bad)]) == 0
    assert "removed 1 record(s)" in capsys.readouterr().out and len(store) == 1
    assert main(["device", "records", "local-cpu", "--remove", "77"]) == 1
    assert "no record [77]" in _one_line_error(capsys)


def test_warnings_print_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    store = MeasurementStore("local-cpu")
    model = tmp_path / "m.onnx"
    model.write_bytes(mlp(8, 1).SerializeToString())
    rec = store.put(model, _measured(model))
    store.put(mlp(9, 1), _measured(model))
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE measurements SET measurement = 'x' WHERE id = ?", (rec,))
    conn.close()
    assert main(["device", "export", "local-cpu", str(tmp_path / "x" / "r.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "hwnas: warning: left 1 unreadable record(s)" in err and "Warning" not in err


def test_remove_deletes_the_store_unless_kept(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "add", "board"]) == 0
    MeasurementStore("board").put(mlp(8, 1), _measured_graph())
    assert main(["device", "remove", "board"]) == 0
    assert "and its measurements" in capsys.readouterr().out
    assert main(["device", "add", "board"]) == 0
    assert len(MeasurementStore("board")) == 0
    assert main(["device", "remove", "board", "--keep-measurements"]) == 0
    assert "kept its measurements" in capsys.readouterr().out
    assert main(["device", "remove", "local-cpu"]) == 1
    assert "built-in device" in _one_line_error(capsys)


def _measured_graph():  # type: ignore[no-untyped-def]
    from latency_models import measure

    return measure(mlp(8, 1), "local-cpu", max_seconds=0.05, warmup_s=0.01)


def test_device_add_reads_the_token_from_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tok").write_text("k3Jq9vX2mP0aZ7wL5rT8yB4n\n")
    argv = ["device", "add", "pi", "--location", "http://10.0.0.7:8765", "--token-file"]
    assert main([*argv, str(tmp_path / "tok")]) == 0
    assert DEVICES.get("pi").token == "k3Jq9vX2mP0aZ7wL5rT8yB4n"


# --- files that run code -------------------------------------------------------------------
EVIL = """
from pathlib import Path
Path(__file__).with_name("ran").write_text("imported")
def make():
    return None
"""


def test_a_run_folder_naming_code_is_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from _front_data import make_fake_run

    (tmp_path / "evil.py").write_text(EVIL)
    run = make_fake_run(tmp_path / "run", n=4, n_failed=0)
    settings = json.loads((run / "settings.json").read_text())
    settings["task"] = f"{tmp_path / 'evil.py'}:make"
    (run / "settings.json").write_text(json.dumps(settings))
    assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 1
    err = _one_line_error(capsys)
    assert "evil.py:make" in err and "--trust-task" in err and "--task SPEC" in err
    assert not (tmp_path / "ran").exists()


def test_load_exported_does_not_run_the_task_named_inside(tmp_path: Path) -> None:
    import torch

    (tmp_path / "evil.py").write_text(EVIL)
    folder = tmp_path / "exported"
    folder.mkdir()
    torch.save(
        {"format_version": 1, "task": f"{tmp_path / 'evil.py'}:make", "config": {},
         "space": {}, "state_dict": {}},
        folder / "model.pt",
    )  # fmt: skip
    with pytest.raises(TaskError, match=r"evil\.py:make.*trust_task=True"):
        load_exported(folder)
    assert not (tmp_path / "ran").exists()
    with pytest.raises(UnknownNameError, match="no-such-task"):
        load_exported(folder, task="no-such-task")  # the user's name is the one used
    assert not (tmp_path / "ran").exists()
    with pytest.raises(TaskError, match="returned NoneType"):
        load_exported(folder, trust_task=True)
    assert (tmp_path / "ran").read_text() == "imported"


def test_a_damaged_model_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(RunError, match=r"is not a model\.pt written by `hwnas export`"):
        load_exported(tmp_path)


def test_bundled_task_names_are_trusted() -> None:
    assert trusted_task_spec("digits-resnet", task=None, trust_task=False, source="x") == (
        "digits-resnet"
    )
    with pytest.raises(TaskError, match="'mod:func'"):
        trusted_task_spec("mod:func", task=None, trust_task=False, source="x")
    assert trusted_task_spec("mod:func", task="digits-resnet", trust_task=False, source="x") == (
        "digits-resnet"
    )
