import json
import threading
from pathlib import Path

import pytest

from latency_models import MeasurementStore
from latency_models.agent import make_server
from latency_models.profiling._check import mlp
from nas.cli import main

pytestmark = pytest.mark.usefixtures("isolated_home")


def test_list_add_show_remove(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "list"]) == 0
    assert "local-cpu-2t" in capsys.readouterr().out
    add = ["device", "add", "pi4", "--location", "http://10.1.2.3:8765", "--token", "s3cr3t-tok"]
    assert main([*add, "--threads", "4", "--precisions", "32,8,4"]) == 0
    capsys.readouterr()
    assert main(["device", "show", "pi4"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["threads"] == 4 and shown["precisions"] == [32, 8, 4]
    assert shown["token"] == "***" and shown["measurements"] == 0
    assert main(["device", "list", "--json"]) == 0
    assert "s3cr3t" not in capsys.readouterr().out
    assert main(["device", "add", "pi4"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["device", "remove", "pi4"]) == 0
    assert main(["device", "show", "pi4"]) == 1
    assert "unknown device 'pi4'" in capsys.readouterr().err


def test_add_rejects_bad_values_with_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "add", "x", "--threads", "0"]) == 1
    err = capsys.readouterr().err
    assert "threads must be an integer >= 1, got 0" in err and "usage: hwnas device add" in err


def test_measure_import_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(mlp(8, 1).SerializeToString())
    assert main(["device", "measure", "local-cpu", str(model), "--max-seconds", "0.05"]) == 0
    assert "ms median" in capsys.readouterr().out
    out = tmp_path / "exp" / "r.jsonl"
    out.parent.mkdir()
    assert main(["device", "export", "local-cpu", str(out)]) == 0
    assert main(["device", "add", "other"]) == 0
    assert main(["device", "import", "other", str(out)]) == 0
    assert "imported 1 new" in capsys.readouterr().out
    assert len(MeasurementStore("other")) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"latency_ms": 1}\n')
    assert main(["device", "import", "other", str(bad)]) == 1
    assert 'bad.jsonl:1: missing "onnx"' in capsys.readouterr().err


def test_check_prints_spread(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "check", "local-cpu", "--max-seconds", "0.05", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["graph"] for r in results] == ["mlp-0.1ms", "conv-1ms", "conv-30ms", "memory-20ms"]
    assert all(len(r["medians_ms"]) == 2 and r["spread_pct"] >= 0 for r in results)


def test_remote_device_through_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = make_server("127.0.0.1", 0, token="cli-token")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert (
            main(["device", "add", "loop", "--location", server.url, "--token", "cli-token"]) == 0
        )
        model = tmp_path / "m.onnx"
        model.write_bytes(mlp(8, 1).SerializeToString())
        assert main(["device", "measure", "loop", str(model), "--max-seconds", "0.05",
                     "--json"]) == 0  # fmt: skip
        out = capsys.readouterr().out
        assert json.loads(out[out.index("{") :])["device"] == "loop"
        assert main(["device", "add", "loop", "--location", server.url, "--token", "wrong",
                     "--replace"]) == 0  # fmt: skip
        assert main(["device", "measure", "loop", str(model), "--remeasure"]) == 1
        assert "refused the token" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()


def test_agent_command_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["agent", "--help"])
    assert "--max-body-mb" in capsys.readouterr().out


def _imported_jsonl(folder: Path, n: int = 24) -> Path:
    """``n`` small networks with the latencies of a device without kernel fusion."""
    from latency_models import random_network
    from latency_models.features._oplevel import oplevel_feature_dict

    (folder / "graphs").mkdir(parents=True)
    lines: list[tuple[str, float]] = []
    for i in range(n):
        g = random_network(i, size=16)
        f = oplevel_feature_dict(g)
        ms = 0.02 + 0.004 * f["mmacs_total"] + 0.003 * f["count_total"] + 0.01 * f["mbytes_total"]
        (folder / "graphs" / f"{i}.onnx").write_bytes(g.SerializeToString())
        lines.append((f"graphs/{i}.onnx", ms))
    lines.append((lines[1][0], lines[1][1] * 1.04))  # measured twice
    path = folder / "r.jsonl"
    path.write_text("".join(json.dumps({"onnx": o, "latency_ms": ms}) + "\n" for o, ms in lines))
    return path


def test_import_fit_then_eval_prints_every_kind_beside_repeat_agreement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonl = _imported_jsonl(tmp_path / "data")
    assert main(["device", "add", "board"]) == 0
    assert main(["device", "import", "board", str(jsonl), "--fit"]) == 0
    out = capsys.readouterr().out
    assert "latency_ms: fitted op-level" in out  # imported: no x86 kernel block, op-level
    assert "op-count (baseline)" in out and "macs (baseline)" in out
    assert "energy_mj: not fitted" in out
    assert main(["device", "eval", "board"]) == 0
    out = capsys.readouterr().out
    assert "every kind out of fold (oplevel device, families held out)" in out
    for kind in ("op-level *", "macs (baseline)", "op-count (baseline)", "log-ridge", "additive"):
        assert kind in out
    assert "labels' repeat agreement: within 10% 100.0% of 1 graphs measured twice" in out
    assert main(["device", "fit", "board", "--target", "latency_ms"]) == 0
    assert "saved to" in capsys.readouterr().out


def test_fit_without_enough_measurements_says_what_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["device", "add", "empty-board"]) == 0
    assert main(["device", "fit", "empty-board", "--target", "latency_ms"]) == 1
    assert "only 0 stored graphs with latency_ms" in capsys.readouterr().err
