import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _agent_http import healthy as _healthy
from _agent_http import raw as _raw

import latency_models
from latency_models import (
    AgentAuthError,
    AgentTimeoutError,
    AgentUnreachableError,
    DeviceSpec,
    GraphRejectedError,
    measure,
)
from latency_models.agent import AgentServer, make_server
from latency_models.profiling._check import conv_stack, mlp

TOKEN = "test-token"
LIMIT = 256 * 1024
FAST = {"max_seconds": 0.15, "warmup_s": 0.02}


def _start(**kwargs: object) -> AgentServer:
    server = make_server("127.0.0.1", 0, token=TOKEN, max_body_bytes=LIMIT, **kwargs)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    server = _start(queue_timeout_s=10.0)
    yield server
    server.shutdown()
    server.server_close()


def _device(server: AgentServer, token: str = TOKEN) -> DeviceSpec:
    return DeviceSpec("remote", location=server.url, token=token)


def test_measures_through_agent_and_agrees_with_local(agent: AgentServer) -> None:
    graph = conv_stack(16, 28, 2)
    # The 2-core test machine is shared with other jobs, whose load moves the median; the
    # fast end of the distribution (p10) is what the device itself does, and the best of
    # two interleaved measurements each keeps a burst of load out of the comparison (one
    # each failed here at a p10 ratio of 0.57, then passed three times in a row).
    remotes, locals_ = [], []
    for _ in range(2):
        remotes.append(measure(graph, _device(agent), max_seconds=0.3, warmup_s=0.05))
        locals_.append(measure(graph, "local-cpu", max_seconds=0.3, warmup_s=0.05))
    remote, local = remotes[0], locals_[0]
    assert remote.device == "remote" and remote.n_runs > 0
    assert remote.host == local.host and remote.runtime_version == local.runtime_version
    assert remote.host_info["nchwc_block"] == local.host_info["nchwc_block"]
    p10 = min(m.p10_ms for m in remotes) / min(m.p10_ms for m in locals_)
    assert 0.67 < p10 < 1.5
    median = min(m.latency_ms for m in remotes) / min(m.latency_ms for m in locals_)
    assert 0.33 < median < 3.0
    assert _healthy(agent)


def test_health_details_need_the_token(agent: AgentServer) -> None:
    status, public = _raw(agent, "GET", "/health")
    assert status == 200 and public["protocol"] == 1 and "host" not in public
    _, private = _raw(agent, "GET", "/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert private["max_body_bytes"] == LIMIT and "CPUExecutionProvider" in private["providers"]


def test_wrong_token(agent: AgentServer) -> None:
    body = mlp(8, 1).SerializeToString()
    status, payload = _raw(agent, "POST", "/measure", body, {"X-Hwnas-Token": "nope"})
    assert status == 401 and "token" in payload["error"]
    status, _ = _raw(agent, "POST", "/measure", body)
    assert status == 401
    with pytest.raises(AgentAuthError, match="refused the token"):
        measure(mlp(8, 1), _device(agent, token="nope"), **FAST)
    assert _healthy(agent)


def test_oversized_body(agent: AgentServer) -> None:
    big = b"\0" * (LIMIT + 1)
    status, payload = _raw(agent, "POST", "/measure", big, {"X-Hwnas-Token": TOKEN})
    assert status == 413 and str(LIMIT) in payload["error"]
    with pytest.raises(latency_models.AgentError, match="over the agent's limit"):
        measure(mlp(300, 1), _device(agent), **FAST)  # 360 KB of weights
    assert _healthy(agent)


def test_not_onnx_and_rejected(agent: AgentServer) -> None:
    status, payload = _raw(agent, "POST", "/measure", b"hello", {"X-Hwnas-Token": TOKEN})
    assert status == 400 and payload["kind"] == "invalid_onnx"
    assert "not a valid ONNX model" in payload["error"]
    bad_opt = "/measure?threads=x"
    status, payload = _raw(agent, "POST", bad_opt, mlp(8, 1).SerializeToString(),
                           {"X-Hwnas-Token": TOKEN})  # fmt: skip
    assert status == 400 and payload["kind"] == "bad_option"
    rejected = mlp(8, 1)
    rejected.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(GraphRejectedError, match="onnxruntime rejected"):
        measure(rejected, _device(agent), **FAST)
    assert _healthy(agent)


def _concurrent(server: AgentServer, n: int = 2) -> list[tuple[int, dict]]:
    body = conv_stack(8, 16, 1).SerializeToString()
    out: list[tuple[int, dict]] = []
    path = "/measure?max_seconds=0.4&warmup_s=0.01&target_rse=0.000001"

    def go() -> None:
        out.append(_raw(server, "POST", path, body, {"X-Hwnas-Token": TOKEN}))

    threads = [threading.Thread(target=go) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_concurrent_requests_are_queued(agent: AgentServer) -> None:
    results = _concurrent(agent)
    assert [s for s, _ in results] == [200, 200]
    (a, b) = sorted((p["started_at"], p["finished_at"]) for _, p in results)
    assert a[1] <= b[0]  # one measurement at a time
    assert _healthy(agent)


def test_concurrent_request_gets_busy_after_queue_timeout() -> None:
    server = _start(queue_timeout_s=0.05)
    try:
        statuses = sorted(s for s, _ in _concurrent(server))
        assert statuses == [200, 503]
        assert _healthy(server)
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_and_timeout(agent: AgentServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    dead = DeviceSpec("dead", location=f"http://127.0.0.1:{free_port}", token=TOKEN)
    with pytest.raises(AgentUnreachableError, match="cannot reach the agent"):
        measure(mlp(8, 1), dead, **FAST)
    with pytest.raises(AgentTimeoutError, match="did not answer"):
        # target_rse this small is never met: the agent runs the full second, past the timeout
        measure(
            conv_stack(8, 16, 1), _device(agent), max_seconds=1.0, target_rse=1e-9, timeout=0.3
        )
    assert _healthy(agent)


def test_missing_token_is_clear(monkeypatch: pytest.MonkeyPatch, agent: AgentServer) -> None:
    monkeypatch.delenv("HWNAS_AGENT_TOKEN", raising=False)
    with pytest.raises(AgentAuthError, match="has no agent token"):
        measure(mlp(8, 1), DeviceSpec("x", location=agent.url), **FAST)


def test_agent_runs_with_only_numpy_and_onnxruntime(tmp_path: Path) -> None:
    """The copied stand-alone agent imports no hwnas package, torch, onnx or sklearn."""
    src = Path(latency_models.__file__).parent
    files = ("agent.py", "measurement/_bench.py", "measurement/_host.py", "devices/_meters.py")
    for name in files:
        (tmp_path / Path(name).name).write_text((src / name).read_text())
    code = (
        "import sys; sys.argv = ['agent']; import agent; "
        "srv = agent.make_server('127.0.0.1', 0, token='t'); srv.server_close(); "
        "bad = {'latency_models', 'nas', 'torch', 'sklearn', 'onnx'} & set(sys.modules); "
        "print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_agent_script_prints_token_and_serves(tmp_path: Path) -> None:
    script = Path(latency_models.__file__).parent / "agent.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in first and second.startswith("token: ")
        url = first.split("listening on ")[1].strip()
        token = second.split("token: ")[1].strip()
        assert len(token) >= 24
        spec = DeviceSpec("script", location=url, token=token)
        assert measure(mlp(8, 1), spec, **FAST).latency_ms > 0
    finally:
        proc.terminate()
        proc.wait(10)
