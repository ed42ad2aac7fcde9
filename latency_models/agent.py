"""The measurement agent: an HTTP server that times ONNX graphs sent to it.

Run it on the target device; a device with ``location="http://HOST:PORT"`` is then measured
through it by :func:`latency_models.measure`, transparently.

Installing on a Raspberry Pi, a phone or any small device
---------------------------------------------------------
The agent needs Python 3.10+, numpy and onnxruntime only (onnx, when installed, is used to
validate graphs). Run as a script, it imports nothing from hwnas but ``_bench.py``,
``_host.py`` and ``_meters.py`` next to it, so copy those four files to the device::

    # Raspberry Pi OS 64-bit (aarch64), or any Linux with onnxruntime wheels on PyPI:
    python3 -m venv ~/hwnas-agent && . ~/hwnas-agent/bin/activate
    pip install numpy onnxruntime
    mkdir ~/hwnas-agent/src && cd ~/hwnas-agent/src
    # copy latency_models/agent.py, measure/_bench.py, measure/_host.py and
    # devices/_meters.py here (scp), then
    python agent.py --host 0.0.0.0 --port 8765

    # Android: Termux (F-Droid), `pkg install python python-numpy`, then
    # `pip install onnxruntime` where a wheel exists for the ABI; run as above.

Where hwnas is fully installed, ``hwnas agent`` or ``python -m latency_models.agent`` do the
same (they import the whole ``latency_models`` package, with scikit-learn).

On start the agent prints a random token, unless one is given in a file
(``--token-file FILE``, readable by its owner only), in ``$HWNAS_AGENT_TOKEN`` or (visible to
every user in the process list) with ``--token``; a token under 16 characters is warned
about. Register the device on the machine that runs the search::

    hwnas device add pi4 --location http://PI_ADDRESS:8765 --token-file token.txt --threads 4

Protocol (version 1)
--------------------
``GET /health`` → 200 JSON ``{"status": "ok", "protocol": 1, "busy": bool}``; with a valid
token also ``runtime_version``, ``host``, ``host_info``, ``providers``, ``max_body_bytes``.

``POST /measure?threads=1&batch_size=1&max_seconds=3&...`` with the serialized ONNX model as
the body and the header ``X-Hwnas-Token: TOKEN`` (or ``Authorization: Bearer TOKEN``).
Query options: ``threads``, ``batch_size``, ``providers`` (comma-separated),
``max_seconds`` (at most the agent's ``--max-seconds-limit``), ``target_rse``,
``min_samples``, ``warmup_s``, ``window_ms``, ``energy_meter``, ``pin_cpus``
(comma-separated), ``seed``, ``runtime`` (``latency_models.runtimes``; its package installed
on the agent's host, and the ``runtimes`` folder copied next to a stand-alone agent). Answers:

- 200: the benchmark result as JSON (see ``_bench.benchmark``) plus ``started_at`` and
  ``finished_at`` (agent clock, s since the epoch).
- 400: the body is not an ONNX model, the Content-Length is not a number >= 0, or an
  option is invalid or out of range (``{"error", "kind"}``).
- 401: missing or wrong token. 411: no Content-Length.
- 413: the body exceeds ``--max-body-mb`` (the connection is closed unread).
- 422: onnxruntime rejected the graph. 503: busy for longer than ``--queue-timeout``, more
  than ``--max-connections`` open connections, or more bodies in flight than the agent
  holds in memory (``Retry-After`` says when to retry). 500: the measurement failed otherwise.

Measurements run one at a time (a lock): a request that arrives while another is measured
waits up to ``--queue-timeout`` seconds, then gets 503. The token is compared in constant
time. HTTP is not encrypted: on an untrusted network, tunnel it (``ssh -L``).

Limits (what a client, with or without the token, cannot make the agent do): options must be
finite and in range (``threads`` at most ``--max-threads``, default the CPU count;
``batch_size`` at most ``--max-batch-size``; times at most ``--max-seconds-limit``); a
request's line, headers and body must all arrive within ``--request-timeout`` seconds,
however slowly the bytes trickle; at most ``--max-connections`` connections are served at
once (each holds one thread), more are answered 503 without a thread; bodies being read or
queued hold at most four times ``--max-body-mb`` of memory together.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import secrets
import socket
import stat
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

if __package__:
    from latency_models.measurement._bench import (
        GraphRejected,
        benchmark,
        host_fingerprint,
        host_info,
        runtime_version,
    )
else:  # copied stand-alone, _bench.py next to it; or run as a script from the source tree
    _HERE = os.path.dirname(os.path.abspath(__file__))
    for _sub in ("measurement", "devices"):
        if os.path.isdir(os.path.join(_HERE, _sub)):
            sys.path.insert(0, os.path.join(_HERE, _sub))
    from _bench import (  # type: ignore[no-redef,import-not-found]
        GraphRejected,
        benchmark,
        host_fingerprint,
        host_info,
        runtime_version,
    )

_logger = logging.getLogger(__name__)

PROTOCOL = 1
DEFAULT_PORT = 8765
DEFAULT_MAX_BODY_BYTES = 64 * 2**20
DEFAULT_QUEUE_TIMEOUT_S = 30.0
DEFAULT_MAX_SECONDS_LIMIT = 60.0
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_REQUEST_TIMEOUT_S = 30.0
DEFAULT_MAX_BATCH_SIZE = 256
MAX_WINDOW_MS = 10_000.0
MAX_MIN_SAMPLES = 1_000_000
MIN_TOKEN_CHARS = 16
TOKEN_ENV = "HWNAS_AGENT_TOKEN"
PENDING_BODIES = 4
"""Bodies of the largest size that may be read or queued at once (their bytes together)."""

_FLOAT_OPTS = ("max_seconds", "target_rse", "warmup_s", "window_ms", "kernel_times_s")
_INT_OPTS = ("threads", "batch_size", "min_samples", "seed")


class AgentServer(ThreadingHTTPServer):
    """The agent's HTTP server: settings, token, limits and the one-measurement-at-a-time lock.

    Args:
        address: ``(host, port)``; port 0 picks a free port (see ``server_address``).
        token: The token clients must send.
        max_body_bytes: Largest accepted request body (bytes).
        queue_timeout_s: How long a request waits for a running measurement (s).
        max_seconds_limit: Cap on a request's ``max_seconds`` (s).
        max_threads: Cap on a request's ``threads``; default the CPU count.
        max_batch_size: Cap on a request's ``batch_size``.
        max_connections: Connections served at once (one thread each); more get 503.
        request_timeout_s: Time for a request's line, headers and body to arrive (s).
    """

    daemon_threads = True
    request_queue_size = 128  # a burst of connections is accepted (and answered), not dropped

    def __init__(
        self,
        address: tuple[str, int],
        *,
        token: str,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
        max_seconds_limit: float = DEFAULT_MAX_SECONDS_LIMIT,
        max_threads: int | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        if not token:
            raise ValueError("the agent needs a non-empty token.")
        max_threads = (os.cpu_count() or 1) if max_threads is None else max_threads
        ints = {"max_body_bytes": max_body_bytes, "max_threads": max_threads,
                "max_batch_size": max_batch_size, "max_connections": max_connections}  # fmt: skip
        for name, value in ints.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        times = {"queue_timeout_s": queue_timeout_s, "max_seconds_limit": max_seconds_limit,
                 "request_timeout_s": request_timeout_s}  # fmt: skip
        for name, seconds in times.items():
            may_be_zero = name == "queue_timeout_s"  # 0: a request never waits
            if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not may_be_zero):
                bound = ">= 0" if may_be_zero else "> 0"
                raise ValueError(f"{name} must be a finite number {bound}, got {seconds!r}.")
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.queue_timeout_s = queue_timeout_s
        self.max_seconds_limit = max_seconds_limit
        self.max_threads = max_threads
        self.max_batch_size = max_batch_size
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self.measure_lock = threading.Lock()
        self._limits_lock = threading.Lock()
        self._n_connections = 0
        self._pending_bytes = 0
        self._deadlines: dict[socket.socket, float] = {}
        self._stop = threading.Event()
        super().__init__(address, _Handler)
        self._reaper = threading.Thread(target=self._reap, name="agent-reaper", daemon=True)
        self._reaper.start()

    @property
    def url(self) -> str:
        """``http://host:port`` the server listens on."""
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{host}:{port}"

    @property
    def n_connections(self) -> int:
        """Connections being served now (each holds one thread)."""
        return self._n_connections

    # --- connections: a bounded number, each with a deadline for its request to arrive
    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve ``request`` on a thread of its own, or answer 503 if too many are open."""
        with self._limits_lock:
            full = self._n_connections >= self.max_connections
            if not full:
                self._n_connections += 1
        if full:
            _refuse_full(request, self.max_connections)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connection_done()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """The connection's thread; counts the connection closed when it ends."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connection_done()

    def _connection_done(self) -> None:
        with self._limits_lock:
            self._n_connections -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log at debug level: a client that hung up or missed its deadline is no error."""
        _logger.debug("connection from %s ended with an error", client_address, exc_info=True)

    def watch(self, conn: socket.socket) -> None:
        """Cut ``conn`` off unless its request has arrived within ``request_timeout_s``."""
        with self._limits_lock:
            self._deadlines[conn] = time.monotonic() + self.request_timeout_s

    def unwatch(self, conn: socket.socket) -> None:
        """The request on ``conn`` has arrived: no deadline any more."""
        with self._limits_lock:
            self._deadlines.pop(conn, None)

    def _reap(self) -> None:
        """One thread for all deadlines (a timer per connection would double the threads)."""
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._limits_lock:
                late = [c for c, d in self._deadlines.items() if d <= now]
                for conn in late:
                    del self._deadlines[conn]
            for conn in late:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def reserve_body(self, n_bytes: int) -> bool:
        """Count ``n_bytes`` of body against the memory bound; False if it would pass it."""
        with self._limits_lock:
            if self._pending_bytes + n_bytes > PENDING_BODIES * self.max_body_bytes:
                return False
            self._pending_bytes += n_bytes
            return True

    def release_body(self, n_bytes: int) -> None:
        """Give back what :meth:`reserve_body` counted."""
        with self._limits_lock:
            self._pending_bytes -= n_bytes

    def server_close(self) -> None:
        """Stop the deadline thread and close the listening socket."""
        self._stop.set()
        super().server_close()


def _refuse_full(request: socket.socket, limit: int) -> None:
    """Answer 503 on a connection over the limit, from the accepting thread, without waiting."""
    body = json.dumps(
        {"error": f"busy: {limit} connections are open; retry later.", "kind": "busy"}
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        request.setblocking(False)  # a client that reads nothing cannot stall the accept loop
        request.send(head.encode() + body)


class _Handler(BaseHTTPRequestHandler):
    server: AgentServer
    server_version = f"hwnas-agent/{PROTOCOL}"

    def setup(self) -> None:
        # per read; the request deadline bounds the sum of the reads
        self.timeout = self.server.request_timeout_s  # type: ignore[misc]
        super().setup()

    def handle_one_request(self) -> None:
        self.server.watch(self.connection)
        try:
            super().handle_one_request()
        finally:
            self.server.unwatch(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        _logger.info("%s %s", self.address_string(), format % args)

    def _send(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, kind: str, message: str, **headers: str) -> None:
        self._send(status, {"error": message, "kind": kind}, dict(headers))

    def _authorized(self) -> bool:
        given = self.headers.get("X-Hwnas-Token")
        auth = self.headers.get("Authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(
            given.encode(), self.server.token.encode()
        )

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path != "/health":
            self._error(
                404, "not_found", f"no such path {path!r}; use GET /health or POST /measure."
            )
            return
        payload: dict[str, Any] = {
            "status": "ok",
            "protocol": PROTOCOL,
            "busy": self.server.measure_lock.locked(),
        }
        if self._authorized():
            import onnxruntime as ort

            info = host_info()
            payload.update(
                runtime_version=runtime_version(),
                host=host_fingerprint(info),
                host_info=info,
                providers=ort.get_available_providers(),
                max_body_bytes=self.server.max_body_bytes,
                max_seconds_limit=self.server.max_seconds_limit,
                max_threads=self.server.max_threads,
                max_batch_size=self.server.max_batch_size,
            )
        self._send(200, payload)

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/measure":
            self._error(404, "not_found", f"no such path {parts.path!r}; use POST /measure.")
            return
        if not self._authorized():
            self.close_connection = True
            self._error(
                401,
                "unauthorized",
                "missing or wrong token: send the header 'X-Hwnas-Token: TOKEN' (or "
                "'Authorization: Bearer TOKEN') with the token the agent printed on start.",
            )
            return
        length = self._content_length()
        if length is None:
            return
        if not self.server.reserve_body(length):
            self.close_connection = True
            self._error(
                503,
                "busy",
                "busy: other bodies being received fill the agent's memory bound; retry later.",
                **{"Retry-After": "1"},
            )
            return
        try:
            self._measure(length, parts.query)
        finally:
            self.server.release_body(length)

    def _content_length(self) -> int | None:
        """The body's length, or None after answering why it is refused."""
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            self._error(411, "length_required", "send the ONNX model with a Content-Length.")
            return None
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._error(
                400,
                "bad_request",
                f"invalid Content-Length {length_text!r}: send the body's size in bytes.",
            )
            return None
        if length > self.server.max_body_bytes:
            self.close_connection = True
            self._error(
                413,
                "too_large",
                f"body of {length} bytes exceeds the agent's limit of "
                f"{self.server.max_body_bytes} bytes; restart the agent with a larger "
                "--max-body-mb.",
            )
            return None
        return length

    def _measure(self, length: int, query: str) -> None:
        body = self.rfile.read(length)
        if len(body) < length:  # the client hung up, or missed the request deadline
            return
        self.server.unwatch(self.connection)
        try:
            options = self._options(query)
        except ValueError as exc:
            self._error(400, "bad_option", str(exc))
            return
        problem = _onnx_problem(body)
        if problem:
            self._error(400, "invalid_onnx", problem)
            return
        if not self.server.measure_lock.acquire(timeout=self.server.queue_timeout_s):
            self._error(
                503,
                "busy",
                f"busy: another graph has been measured for over "
                f"{self.server.queue_timeout_s:g} s; retry later.",
                **{"Retry-After": "1"},
            )
            return
        try:
            started = time.time()
            result = benchmark(body, **options)
            result.update(started_at=started, finished_at=time.time())
        except GraphRejected as exc:
            self._error(422, "rejected_by_runtime", str(exc))
            return
        except ValueError as exc:
            self._error(400, "bad_option", str(exc))
            return
        except Exception as exc:  # report, keep serving
            _logger.exception("measurement failed")
            self._error(500, "measurement_failed", f"measurement failed: {exc}")
            return
        finally:
            self.server.measure_lock.release()
        self._send(200, result)

    def _options(self, query: str) -> dict[str, Any]:
        raw = {k: v[-1] for k, v in parse_qs(query).items()}
        known = set(_FLOAT_OPTS) | set(_INT_OPTS)
        known |= {"providers", "energy_meter", "pin_cpus", "runtime"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown options {unknown}; valid: {sorted(known)}.")
        opts: dict[str, Any] = {}
        try:
            for key in _FLOAT_OPTS:
                if key in raw:
                    opts[key] = float(raw[key])
            for key in _INT_OPTS:
                if key in raw:
                    opts[key] = int(raw[key])
            if raw.get("pin_cpus"):
                opts["pin_cpus"] = [int(c) for c in raw["pin_cpus"].split(",")]
        except ValueError as exc:
            raise ValueError(f"invalid option value: {exc}") from exc
        if "providers" in raw:
            opts["providers"] = [p for p in raw["providers"].split(",") if p]
        if "energy_meter" in raw:
            opts["energy_meter"] = raw["energy_meter"]
        if "runtime" in raw:
            opts["runtime"] = raw["runtime"]
        for key, value in opts.items():
            low, high = self._range(key)
            if isinstance(value, (int, float)) and not low <= value <= high:
                raise ValueError(
                    f"{key}={raw[key]} is out of range; this agent accepts {low:g} to {high:g}."
                )
        if len(opts.get("pin_cpus") or ()) > (os.cpu_count() or 1):
            raise ValueError(f"pin_cpus lists more CPUs than this host has ({os.cpu_count()}).")
        return opts

    def _range(self, key: str) -> tuple[float, float]:
        """Allowed values of a numeric option; NaN and infinities fall outside every range."""
        limit = self.server.max_seconds_limit
        return {
            "max_seconds": (1e-3, limit),
            "target_rse": (1e-12, 1.0),
            "warmup_s": (0.0, limit),
            "window_ms": (1e-3, MAX_WINDOW_MS),
            "kernel_times_s": (0.0, limit),
            "threads": (1, self.server.max_threads),
            "batch_size": (1, self.server.max_batch_size),
            "min_samples": (1, MAX_MIN_SAMPLES),
            "seed": (0, 2**32 - 1),
        }.get(key, (-math.inf, math.inf))


def _onnx_problem(body: bytes) -> str:
    """Why ``body`` is not an ONNX model, or "" (onnxruntime checks it when onnx is absent)."""
    if not body:
        return "empty body: send the serialized ONNX model."
    try:
        import onnx
    except ImportError:
        return ""
    try:
        model = onnx.load_from_string(body)
    except Exception as exc:  # protobuf DecodeError and friends
        return f"body ({len(body)} bytes) is not a valid ONNX model: {exc}"
    if not model.graph.node and not model.graph.output:
        return f"body ({len(body)} bytes) is not a valid ONNX model: no nodes and no outputs."
    return ""


def make_server(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
    max_seconds_limit: float = DEFAULT_MAX_SECONDS_LIMIT,
    **limits: Any,
) -> AgentServer:
    """Create (bind, not yet serve) an agent; call ``serve_forever()`` on it.

    Args:
        host: Address to bind (loopback by default; ``0.0.0.0`` for all interfaces).
        port: TCP port; 0 picks a free one.
        token: Required token; ``None`` uses ``$HWNAS_AGENT_TOKEN`` or generates one.
        max_body_bytes: Largest accepted ONNX model (bytes).
        queue_timeout_s: How long a request waits for a running measurement (s).
        max_seconds_limit: Cap on a request's timed loop (s).
        **limits: ``max_threads``, ``max_batch_size``, ``max_connections`` and
            ``request_timeout_s`` of :class:`AgentServer`.
    """
    token = token or os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    return AgentServer(
        (host, port),
        token=token,
        max_body_bytes=max_body_bytes,
        queue_timeout_s=queue_timeout_s,
        max_seconds_limit=max_seconds_limit,
        **limits,
    )


def read_token_file(path: str) -> str:
    """The token in ``path`` (surrounding whitespace removed).

    Raises:
        ValueError: the file cannot be read or holds no token.
    """
    try:
        text = open(path, encoding="utf-8").read(4096).strip()  # noqa: SIM115
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the token file {path!r}: {exc}.") from exc
    if not text or any(c.isspace() for c in text):
        raise ValueError(
            f"token file {path!r} must hold one token on one line (no spaces), e.g. written "
            "by: python -c 'import secrets; print(secrets.token_urlsafe(24))' > token.txt"
        )
    return text


def token_warnings(token: str, source: str, token_file: str | None = None) -> list[str]:
    """What is risky about ``token`` given on ``source`` (``"--token"``, a file, the env)."""
    out = []
    if source == "--token":
        out.append(
            "--token is visible to every user of this machine in the process list; pass "
            f"--token-file FILE or set ${TOKEN_ENV} instead."
        )
    if len(token) < MIN_TOKEN_CHARS or len(set(token)) < 6:
        out.append(
            f"the token is weak ({len(token)} characters, {len(set(token))} distinct); anyone "
            "who reaches the port may guess it and run graphs here. Use a random one: leave "
            "the token out to have one generated, or "
            "python -c 'import secrets; print(secrets.token_urlsafe(24))'."
        )
    if token_file and hasattr(os, "getuid"):
        with contextlib.suppress(OSError):
            if os.stat(token_file).st_mode & (stat.S_IRGRP | stat.S_IROTH):
                out.append(f"token file {token_file!r} is readable by other users; chmod 600 it.")
    return out


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's command-line flags (shared by ``hwnas agent``)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (0: any free)")
    token = parser.add_mutually_exclusive_group()
    token.add_argument(
        "--token-file",
        metavar="FILE",
        default=None,
        help="read the token clients must send from FILE (keep it chmod 600)",
    )
    token.add_argument(
        "--token",
        default=None,
        help=f"token clients must send (visible in the process list: prefer --token-file or "
        f"${TOKEN_ENV}; default a random one printed on start)",
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=DEFAULT_MAX_BODY_BYTES / 2**20,
        help="largest accepted ONNX model in MiB (default 64)",
    )
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=DEFAULT_QUEUE_TIMEOUT_S,
        help="seconds a request waits for a running measurement before 503 busy (default 30)",
    )
    parser.add_argument(
        "--max-seconds-limit",
        type=float,
        default=DEFAULT_MAX_SECONDS_LIMIT,
        help="cap on a request's timed loop in seconds (default 60)",
    )
    parser.add_argument(
        "--max-threads",
        type=int,
        default=None,
        help="cap on a request's onnxruntime threads (default: this host's CPU count)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"cap on a request's batch size (default {DEFAULT_MAX_BATCH_SIZE})",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="connections served at once; more are answered 503 busy "
        f"(default {DEFAULT_MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        help="seconds a request's headers and body may take to arrive, in all "
        f"(default {DEFAULT_REQUEST_TIMEOUT_S:g})",
    )


def _token_from_args(args: argparse.Namespace) -> tuple[str | None, str]:
    """(token or None to generate one, where it came from)."""
    if args.token_file:
        return read_token_file(args.token_file), f"file {args.token_file}"
    if args.token:
        return args.token, "--token"
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV], f"${TOKEN_ENV}"
    return None, "generated"


def run_from_args(args: argparse.Namespace) -> int:
    """Start the agent from parsed :func:`add_arguments` flags; serve until interrupted.

    Returns:
        The exit status: 0 after an interrupt, 2 when a setting is invalid (printed).
    """
    try:
        token, source = _token_from_args(args)
        server = make_server(
            args.host,
            args.port,
            token=token,
            max_body_bytes=int(args.max_body_mb * 2**20),
            queue_timeout_s=args.queue_timeout,
            max_seconds_limit=args.max_seconds_limit,
            max_threads=args.max_threads,
            max_batch_size=args.max_batch_size,
            max_connections=args.max_connections,
            request_timeout_s=args.request_timeout,
        )
    except (ValueError, OSError) as exc:
        print(f"hwnas agent: error: {exc}", file=sys.stderr)
        return 2
    for warning in token_warnings(server.token, source, args.token_file):  # before "listening"
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    print(f"hwnas agent (protocol {PROTOCOL}, {runtime_version()}) listening on {server.url}")
    port = server.server_address[1]
    if source == "generated":
        print(f"token: {server.token}")
        print(
            "register it where you search (put the token in a file, chmod 600): hwnas device "
            f"add NAME --location http://<this-host>:{port} --token-file TOKEN_FILE"
        )
    else:
        print(f"token: from {source}")
    if not _is_loopback(args.host):
        print(
            "warning: listening beyond loopback; anyone who has the token can run graphs here, "
            "and HTTP is not encrypted (tunnel it over ssh on untrusted networks).",
            file=sys.stderr,
        )
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m latency_models.agent``: the agent without the rest of hwnas."""
    parser = argparse.ArgumentParser(
        prog="python -m latency_models.agent",
        description="hwnas measurement agent: times ONNX graphs sent over HTTP.",
    )
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
