"""Plain HTTP requests to a measurement agent on loopback, for the agent tests."""

from __future__ import annotations

import http.client
import json

from latency_models.agent import AgentServer


def raw(
    server: AgentServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict]:
    """(status, JSON body) of one request."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def healthy(server: AgentServer) -> bool:
    """Whether the agent answers /health with ok."""
    return raw(server, "GET", "/health")[1]["status"] == "ok"
