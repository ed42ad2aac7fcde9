"""The measurement agent: an HTTP server that times ONNX graphs sent to it.

Run it on the target device; a device with ``location="http://HOST:PORT"`` is then measured
through it by :func:`latency_models.measure`, transparently.

Installing on a Raspberry Pi, a phone or any small device
---------------------------------------------------------
The agent needs Python 3.10+, numpy and onnxruntime only (onnx, when installed, is used to
validate graphs). Run as a script, it imports nothing from hwnas but ``_bench.py`` and
``_meters.py`` next to it, so copy those three files to the device::

    # Raspberry Pi OS 64-bit (aarch64), or any Linux with onnxruntime wheels on PyPI:
    python3 -m venv ~/hwnas-agent && . ~/hwnas-agent/bin/activate
    pip install numpy onnxruntime
    mkdir ~/hwnas-agent/src && cd ~/hwnas-agent/src
    # copy latency_models/agent.py, _bench.py and _meters.py here (scp), then
    python agent.py --host 0.0.0.0 --port 8765

    # Android: Termux (F-Droid), `pkg install python python-numpy`, then
    # `pip install onnxruntime` where a wheel exists for the ABI; run as above.

Where hwnas is fully installed, ``hwnas agent`` or ``python -m latency_models.agent`` do the
same (they import the whole ``latency_models`` package, with scikit-learn).

On start the agent prints its token (``--token`` or ``$HWNAS_AGENT_TOKEN`` to fix one);
register the device on the machine that runs the search::

    hwnas device add pi4 --location http://PI_ADDRESS:8765 --token TOKEN --threads 4

Protocol (version 1)
--------------------
``GET /health`` → 200 JSON ``{"status": "ok", "protocol": 1, "busy": bool}``; with a valid
token also ``runtime_version``, ``host``, ``host_info``, ``providers``, ``max_body_bytes``.

``POST /measure?threads=1&batch_size=1&max_seconds=3&...`` with the serialized ONNX model as
the body and the header ``X-Hwnas-Token: TOKEN`` (or ``Authorization: Bearer TOKEN``).
Query options: ``threads``, ``batch_size``, ``providers`` (comma-separated),
``max_seconds`` (at most the agent's ``--max-seconds-limit``), ``target_rse``,
``min_samples``, ``warmup_s``, ``window_ms``, ``energy_meter``, ``pin_cpus``
(comma-separated), ``seed``. Answers:

- 200: the benchmark result as JSON (see ``_bench.benchmark``) plus ``started_at`` and
  ``finished_at`` (agent clock, s since the epoch).
- 400: the body is not an ONNX model, or an option is invalid (``{"error", "kind"}``).
- 401: missing or wrong token. 411: no Content-Length.
- 413: the body exceeds ``--max-body-mb`` (the connection is closed unread).
- 422: onnxruntime rejected the graph. 503: busy for longer than ``--queue-timeout``
  (``Retry-After`` says when to retry). 500: the measurement failed otherwise.

Measurements run one at a time (a lock): a request that arrives while another is measured
waits up to ``--queue-timeout`` seconds, then gets 503. The token is compared in constant
time. HTTP is not encrypted: on an untrusted network, tunnel it (``ssh -L``).
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

if __package__:
    from latency_models._bench import (
        GraphRejected,
        benchmark,
        host_fingerprint,
        host_info,
        runtime_version,
    )
else:  # run as a script or copied stand-alone: _bench.py sits next to this file
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

_FLOAT_OPTS = ("max_seconds", "target_rse", "warmup_s", "window_ms", "kernel_times_s")
_INT_OPTS = ("threads", "batch_size", "min_samples", "seed")


class AgentServer(ThreadingHTTPServer):
    """The agent's HTTP server: settings, token and the one-measurement-at-a-time lock.

    Args:
        address: ``(host, port)``; port 0 picks a free port (see ``server_address``).
        token: The token clients must send.
        max_body_bytes: Largest accepted request body (bytes).
        queue_timeout_s: How long a request waits for a running measurement (s).
        max_seconds_limit: Cap on a request's ``max_seconds`` (s).
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        token: str,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
        max_seconds_limit: float = DEFAULT_MAX_SECONDS_LIMIT,
    ) -> None:
        if not token:
            raise ValueError("the agent needs a non-empty token.")
        if max_body_bytes < 1 or queue_timeout_s < 0 or max_seconds_limit <= 0:
            raise ValueError(
                f"max_body_bytes must be >= 1, queue_timeout_s >= 0, max_seconds_limit > 0; "
                f"got {max_body_bytes}, {queue_timeout_s}, {max_seconds_limit}."
            )
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.queue_timeout_s = queue_timeout_s
        self.max_seconds_limit = max_seconds_limit
        self.measure_lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """``http://host:port`` the server listens on."""
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: AgentServer
    timeout = 120  # s: a client that stops sending does not hold a thread forever
    server_version = f"hwnas-agent/{PROTOCOL}"

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
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            self._error(411, "length_required", "send the ONNX model with a Content-Length.")
            return
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            self._error(400, "bad_request", f"invalid Content-Length {length_text!r}.")
            return
        if length > self.server.max_body_bytes:
            self.close_connection = True
            self._error(
                413,
                "too_large",
                f"body of {length} bytes exceeds the agent's limit of "
                f"{self.server.max_body_bytes} bytes; restart the agent with a larger "
                "--max-body-mb.",
            )
            return
        body = self.rfile.read(length)
        try:
            options = self._options(parts.query)
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
        known = set(_FLOAT_OPTS) | set(_INT_OPTS) | {"providers", "energy_meter", "pin_cpus"}
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
        limit = self.server.max_seconds_limit
        if opts.get("max_seconds", 0) > limit:
            raise ValueError(
                f"max_seconds={opts['max_seconds']} exceeds this agent's limit of {limit} s."
            )
        return opts


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
) -> AgentServer:
    """Create (bind, not yet serve) an agent; call ``serve_forever()`` on it.

    Args:
        host: Address to bind (loopback by default; ``0.0.0.0`` for all interfaces).
        port: TCP port; 0 picks a free one.
        token: Required token; ``None`` uses ``$HWNAS_AGENT_TOKEN`` or generates one.
        max_body_bytes: Largest accepted ONNX model (bytes).
        queue_timeout_s: How long a request waits for a running measurement (s).
        max_seconds_limit: Cap on a request's timed loop (s).
    """
    token = token or os.environ.get("HWNAS_AGENT_TOKEN") or secrets.token_urlsafe(24)
    return AgentServer(
        (host, port),
        token=token,
        max_body_bytes=max_body_bytes,
        queue_timeout_s=queue_timeout_s,
        max_seconds_limit=max_seconds_limit,
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's command-line flags (shared by ``hwnas agent``)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (0: any free)")
    parser.add_argument(
        "--token",
        default=None,
        help="token clients must send (default $HWNAS_AGENT_TOKEN, "
        "else a random one printed on start)",
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


def run_from_args(args: argparse.Namespace) -> int:
    """Start the agent from parsed :func:`add_arguments` flags; serve until interrupted."""
    server = make_server(
        args.host,
        args.port,
        token=args.token,
        max_body_bytes=int(args.max_body_mb * 2**20),
        queue_timeout_s=args.queue_timeout,
        max_seconds_limit=args.max_seconds_limit,
    )
    print(f"hwnas agent (protocol {PROTOCOL}, {runtime_version()}) listening on {server.url}")
    print(f"token: {server.token}")
    print(
        "register it where you search: hwnas device add NAME --location "
        f"http://<this-host>:{server.server_address[1]} --token {server.token}"
    )
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
