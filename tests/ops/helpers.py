"""Helpers of the operations tests: free ports, binaries, a metrics-enabled worker fleet."""

from __future__ import annotations

import shutil
import socket
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "stayler.json"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need_binary(name: str) -> str:
    """The path of ``name``, or skip: the Debian package ``prometheus`` provides promtool and prometheus."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (apt-get install -y prometheus)")
    return path


def fetch(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``url``: status and body (HTTP errors are returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metrics_env(tmp_path: Path, port: int) -> dict[str, str]:
    """Worker environment variables for a metrics-enabled fleet with its own port and folder."""
    return {"STAYLER_METRICS_PORT": str(port), "STAYLER_METRICS_DIR": str(tmp_path / "prom"),
            "STAYLER_METRICS_HOST": "127.0.0.1", "STAYLER_QUEUE_STATS_INTERVAL_S": "1"}
