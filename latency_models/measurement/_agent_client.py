"""Client side of the measurement agent protocol (see :mod:`latency_models.agent`)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from latency_models._errors import (
    AgentAuthError,
    AgentBusyError,
    AgentError,
    AgentTimeoutError,
    AgentUnreachableError,
    GraphRejectedError,
)
from latency_models.devices import DeviceSpec

AGENT_PROTOCOL = 1
"""Version of the agent's HTTP protocol; an agent that speaks another is refused."""

_logger = logging.getLogger(__name__)


def _request(
    url: str, *, token: str, timeout: float, body: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    """One HTTP request; returns (status, JSON payload); maps transport failures to errors."""
    headers = {"X-Hwnas-Token": token}
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    req = urllib.request.Request(
        url, data=body, headers=headers, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except TimeoutError as exc:
        raise AgentTimeoutError(f"agent at {url} did not answer within {timeout:g} s.") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (TimeoutError, socket.timeout)):
            raise AgentTimeoutError(
                f"agent at {url} did not answer within {timeout:g} s."
            ) from exc
        raise AgentUnreachableError(
            f"cannot reach the agent at {url}: {exc.reason}. Is `hwnas agent` running there, "
            "and are the host and port right (it binds 127.0.0.1 unless started with --host)?"
        ) from exc
    except (ConnectionError, http.client.HTTPException) as exc:
        raise AgentUnreachableError(
            f"the agent at {url} dropped the connection: {exc!r}."
        ) from exc
    try:
        payload = json.loads(raw.decode() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AgentError(
            f"{url} answered HTTP {status} with something that is not agent JSON; is it an "
            "hwnas agent?"
        ) from exc
    return status, payload


def agent_health(device: DeviceSpec, *, timeout: float = 10.0) -> dict[str, Any]:
    """``GET /health`` of ``device``'s agent (with the token: host, runtime, limits).

    Raises:
        AgentUnreachableError, AgentTimeoutError, AgentAuthError, AgentError.
    """
    token = _token(device)
    status, payload = _request(f"{device.location}/health", token=token, timeout=timeout)
    if status != 200 or payload.get("status") != "ok":
        raise AgentError(f"agent at {device.location} is unhealthy: HTTP {status} {payload}.")
    if payload.get("protocol") != AGENT_PROTOCOL:
        raise AgentError(
            f"agent at {device.location} speaks protocol {payload.get('protocol')}, this hwnas "
            f"speaks {AGENT_PROTOCOL}; install the same hwnas version on both sides."
        )
    if "host" not in payload:
        raise AgentAuthError(
            f"the agent at {device.location} refused the token of device {device.name!r}; use "
            "the token it printed on start (`hwnas device add ... --token TOKEN --replace`)."
        )
    return payload


def _token(device: DeviceSpec) -> str:
    token = device.agent_token()
    if not token:
        raise AgentAuthError(
            f"device {device.name!r} has no agent token; add it with `hwnas device add "
            f"{device.name} --location {device.location} --token TOKEN --replace` or set "
            "$HWNAS_AGENT_TOKEN."
        )
    return token


def measure_on_agent(
    data: bytes, device: DeviceSpec, opts: Mapping[str, Any], *, timeout: float
) -> dict[str, Any]:
    """Send ``data`` to ``device``'s agent; retry while it is busy, until ``timeout`` (s).

    Raises:
        AgentUnreachableError, AgentAuthError, AgentTimeoutError, AgentBusyError,
        GraphRejectedError, AgentError: see :func:`latency_models.measure`.
    """
    token = _token(device)
    health = agent_health(device, timeout=min(timeout, 10.0))
    limit = health.get("max_body_bytes")
    if isinstance(limit, int) and len(data) > limit:
        raise AgentError(
            f"the graph has {len(data)} bytes, over the agent's limit of {limit} bytes; restart "
            "the agent with a larger --max-body-mb."
        )
    query: dict[str, Any] = {
        "threads": device.threads,
        "batch_size": device.batch_size,
        "providers": ",".join(device.providers),
        "energy_meter": device.energy_meter,
    }
    if device.runtime != "onnxruntime":  # an older agent answers 400 naming the option
        query["runtime"] = device.runtime
    for key, value in opts.items():
        if value is None:
            continue
        query[key] = ",".join(map(str, value)) if isinstance(value, list) else value
    url = f"{device.location}/measure?{urlencode(query)}"
    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AgentBusyError(
                f"the agent at {device.location} stayed busy for {timeout:g} s; it measures one "
                "graph at a time. Retry later or pass a longer timeout."
            )
        status, payload = _request(url, token=token, timeout=remaining, body=data)
        message = payload.get("error", payload)
        if status == 200:
            return payload
        if status == 503:
            _logger.debug("agent %s busy; retrying in %.1f s", device.location, delay)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 5.0)
            continue
        if status in (401, 403):
            raise AgentAuthError(
                f"the agent at {device.location} refused the token of device {device.name!r}: "
                f"{message}"
            )
        if status in (400, 422) and payload.get("kind") in ("invalid_onnx", "rejected_by_runtime"):
            raise GraphRejectedError(f"agent at {device.location}: {message}")
        raise AgentError(f"agent at {device.location} answered HTTP {status}: {message}")
