"""The agent under hostile input, for real on loopback: bounded in count and in time."""

import http.client
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _agent_http import healthy as _healthy
from _agent_http import raw as _raw

import latency_models
from latency_models.agent import AgentServer, make_server, read_token_file, token_warnings
from latency_models.measurement._bench import benchmark
from latency_models.profiling._check import mlp

TOKEN = "hostile-test-token-0123456789"
AUTH = {"X-Hwnas-Token": TOKEN}
BODY = mlp(8, 1).SerializeToString()


def _start(**kwargs: object) -> AgentServer:
    kwargs.setdefault("queue_timeout_s", 5.0)
    server = make_server("127.0.0.1", 0, token=TOKEN, max_body_bytes=256 * 1024, **kwargs)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    server = _start(request_timeout_s=1.0, max_connections=16)
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "query, named",
    [
        ("threads=100000", "threads"),
        (f"threads={(os.cpu_count() or 1) + 1}", "threads"),
        ("batch_size=1000000", "batch_size"),
        ("max_seconds=nan", "max_seconds"),
        ("max_seconds=inf", "max_seconds"),
        ("window_ms=inf", "window_ms"),
        ("window_ms=1e12", "window_ms"),
        ("warmup_s=nan", "warmup_s"),
        ("kernel_times_s=1e9", "kernel_times_s"),
        ("target_rse=nan", "target_rse"),
        ("seed=-1", "seed"),
        ("min_samples=0", "min_samples"),
    ],
)
def test_out_of_range_options_are_refused_at_once(
    agent: AgentServer, query: str, named: str
) -> None:
    start = time.monotonic()
    status, payload = _raw(agent, "POST", f"/measure?{query}", BODY, AUTH, timeout=10)
    assert status == 400 and payload["kind"] == "bad_option"
    assert named in payload["error"] and "out of range" in payload["error"]
    assert time.monotonic() - start < 5
    assert _healthy(agent)


def test_benchmark_refuses_nan_and_infinite_times() -> None:
    for bad in ({"max_seconds": math.nan}, {"window_ms": math.inf}, {"warmup_s": math.nan}):
        with pytest.raises(ValueError, match="finite"):
            benchmark(BODY, **bad)  # type: ignore[arg-type]


def _send_raw(server: AgentServer, data: bytes, timeout: float = 10) -> bytes:
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_negative_content_length_is_refused_unread(agent: AgentServer) -> None:
    head = (
        f"POST /measure HTTP/1.1\r\nHost: x\r\nX-Hwnas-Token: {TOKEN}\r\n"
        "Content-Length: -1\r\n\r\n"
    ).encode()
    reply = _send_raw(agent, head + b"\0" * 300_000)  # more than the 256 KiB limit
    assert reply.startswith(b"HTTP/1.0 400") and b"invalid Content-Length '-1'" in reply
    assert _healthy(agent)


def test_trickling_client_is_cut_off_at_the_request_deadline(agent: AgentServer) -> None:
    """A byte every 0.2 s never trips a per-read timeout; the 1 s request deadline ends it."""
    host, port = agent.server_address[:2]
    head = (
        f"POST /measure HTTP/1.1\r\nHost: x\r\nX-Hwnas-Token: {TOKEN}\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    start = time.monotonic()
    with socket.create_connection((str(host), int(port)), timeout=5) as s:
        s.sendall(head)
        closed = False
        for i in range(len(BODY)):  # at most a few seconds: the agent closes first
            try:
                s.sendall(BODY[i : i + 1])
                time.sleep(0.2)
                s.setblocking(False)
                closed = s.recv(1) == b""
                s.setblocking(True)
            except BlockingIOError:
                s.setblocking(True)
            except OSError:
                closed = True
            if closed or time.monotonic() - start > 6:
                break
    assert closed and time.monotonic() - start < 3.0
    assert agent.n_connections == 0 or _wait(lambda: agent.n_connections == 0)
    assert _healthy(agent)


def _wait(cond: object, seconds: float = 3.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_connections_over_the_limit_get_503_without_a_thread() -> None:
    server = _start(request_timeout_s=2.0, max_connections=8)
    host, port = server.server_address[:2]
    threads_before = threading.active_count()
    socks = []
    try:
        for _ in range(8):  # idle connections hold the 8 slots
            socks.append(socket.create_connection((str(host), int(port)), timeout=5))
        assert _wait(lambda: server.n_connections == 8)
        status, payload = _raw(server, "GET", "/health")
        assert status == 503 and "8 connections" in payload["error"]
        assert threading.active_count() - threads_before <= 8
        # the idle ones are cut at the 2 s deadline, and the agent answers again
        assert _wait(lambda: server.n_connections == 0, 5.0)
        assert _healthy(server)
    finally:
        for s in socks:
            s.close()
        server.shutdown()
        server.server_close()


def test_bodies_in_flight_are_bounded_in_memory() -> None:
    server = _start(request_timeout_s=3.0, max_connections=16)  # 4 x 256 KiB in flight
    host, port = server.server_address[:2]
    head = (
        f"POST /measure HTTP/1.1\r\nHost: x\r\nX-Hwnas-Token: {TOKEN}\r\n"
        f"Content-Length: {240 * 1024}\r\n\r\n"
    ).encode()
    socks = []
    try:
        for _ in range(4):  # each announces 240 KiB and sends nothing more
            s = socket.create_connection((str(host), int(port)), timeout=5)
            s.sendall(head)
            socks.append(s)
        assert _wait(lambda: server._pending_bytes == 4 * 240 * 1024)
        fifth = socket.create_connection((str(host), int(port)), timeout=5)
        fifth.sendall(head)
        reply = b""
        while chunk := fifth.recv(65536):  # headers and body may come in two pieces
            reply += chunk
        fifth.close()
        assert reply.startswith(b"HTTP/1.0 503") and b"memory bound" in reply
    finally:
        for s in socks:
            s.close()
        server.shutdown()
        server.server_close()


def test_token_file_and_weak_token_warnings(tmp_path: Path) -> None:
    good = tmp_path / "token.txt"
    good.write_text("  k3Jq9vX2mP0aZ7wL5rT8yB4n \n")
    good.chmod(0o600)
    assert read_token_file(str(good)) == "k3Jq9vX2mP0aZ7wL5rT8yB4n"
    assert token_warnings("k3Jq9vX2mP0aZ7wL5rT8yB4n", "file", str(good)) == []
    weak = token_warnings("x", "--token")
    assert any("process list" in w for w in weak) and any("weak (1 characters" in w for w in weak)
    good.chmod(0o644)
    assert any(
        "chmod 600" in w for w in token_warnings("k3Jq9vX2mP0aZ7wL5rT8yB4n", "f", str(good))
    )
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="must hold one token"):
        read_token_file(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="cannot read the token file"):
        read_token_file(str(tmp_path / "missing"))


def _start_script(tmp_path: Path, *args: str, env: dict[str, str] | None = None
                  ) -> tuple[subprocess.Popen[str], str, str]:  # fmt: skip
    script = Path(latency_models.__file__).parent / "agent.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert proc.stdout is not None
    first, second = proc.stdout.readline(), proc.stdout.readline()
    return proc, first, second


def test_script_takes_the_token_from_a_file_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "t").write_text(TOKEN + "\n")
    (tmp_path / "t").chmod(0o600)
    for args, env in ((("--token-file", "t"), {}), ((), {"HWNAS_AGENT_TOKEN": TOKEN})):
        proc, first, second = _start_script(tmp_path, *args, env=env)
        try:
            url = first.split("listening on ")[1].strip()
            assert second.startswith("token: from ") and TOKEN not in second
            host, port = url.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", "/health", headers=AUTH)
            assert "host" in json.loads(conn.getresponse().read())
            conn.close()
        finally:
            proc.terminate()
            proc.wait(10)


def test_script_warns_about_a_weak_token_on_the_command_line(tmp_path: Path) -> None:
    proc, _, _ = _start_script(tmp_path, "--token", "x")
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert "process list" in err and "the token is weak" in err


def test_script_reports_a_missing_token_file_in_one_line(tmp_path: Path) -> None:
    script = Path(latency_models.__file__).parent / "agent.py"
    out = subprocess.run([sys.executable, str(script), "--token-file", "nope"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "cannot read the token file" in out.stderr


def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Threads", "VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_load_200_requests_and_200_slow_connections(tmp_path: Path) -> None:
    """200 authenticated requests at once and 200 slow connections, against the script.

    Every request is answered (200 or 503) or refused within the limit, the agent's threads
    and memory stay bounded, and it answers afterwards.
    """
    (tmp_path / "t").write_text(TOKEN)
    (tmp_path / "t").chmod(0o600)
    proc, first, _ = _start_script(
        tmp_path, "--token-file", "t", "--max-connections", "64", "--request-timeout", "2",
        "--queue-timeout", "1", "--max-seconds-limit", "2",
    )  # fmt: skip
    try:
        url = first.split("listening on ")[1].strip()
        host, port_text = url.removeprefix("http://").split(":")
        port = int(port_text)
        base = _proc_status(proc.pid)
        peak = dict(base)
        stop = threading.Event()

        def monitor() -> None:
            while not stop.wait(0.05):
                now = _proc_status(proc.pid)
                for key in ("Threads", "VmRSS"):
                    peak[key] = max(peak[key], now[key])

        watcher = threading.Thread(target=monitor, daemon=True)
        watcher.start()
        outcomes: list[str] = []
        lock = threading.Lock()
        query = "/measure?max_seconds=0.05&warmup_s=0.01"

        def authenticated() -> None:
            try:
                conn = http.client.HTTPConnection(host, port, timeout=30)
                conn.request("POST", query, body=BODY, headers=AUTH)
                result = str(conn.getresponse().status)
                conn.close()
            except OSError as exc:  # refused at the connection limit before the reply
                result = type(exc).__name__
            with lock:
                outcomes.append(result)

        def slow() -> None:
            # cut: the agent closes the connection (an error while sending, or end of stream
            # right after); the kernel may hold a burst's handshakes until the agent accepts
            try:
                with socket.create_connection((host, port), timeout=30) as s:
                    for byte in b"POST /measure HTTP/1.1\r\n":
                        s.sendall(bytes([byte]))
                        time.sleep(0.25)
                    s.settimeout(5)
                    reply = s.recv(64)  # nothing, or the 503 of a connection over the limit
                    refused = reply == b"" or reply.split(b" ")[1:2] == [b"503"]
                    result = "slow-cut" if refused else "slow-not-cut"
            except OSError:
                result = "slow-cut"
            with lock:
                outcomes.append(result)

        start = time.monotonic()
        workers = [threading.Thread(target=authenticated) for _ in range(200)]
        workers += [threading.Thread(target=slow) for _ in range(200)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        elapsed = time.monotonic() - start
        stop.set()
        watcher.join()
        counts = {k: outcomes.count(k) for k in sorted(set(outcomes))}
        print(f"\nload: {counts} in {elapsed:.1f} s; agent threads {base['Threads']} -> "
              f"peak {peak['Threads']}; RSS {base['VmRSS'] // 1024} -> peak "
              f"{peak['VmRSS'] // 1024} MiB")  # fmt: skip
        assert len(outcomes) == 400 and elapsed < 60
        assert counts.get("slow-not-cut", 0) == 0
        assert "500" not in counts and counts.get("200", 0) >= 1
        assert peak["Threads"] <= base["Threads"] + 64 + 4
        assert peak["VmRSS"] - base["VmRSS"] < 300 * 1024  # KiB
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("POST", query, body=BODY, headers=AUTH)
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)
