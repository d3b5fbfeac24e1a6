"""The docs stay true to the code: every setting and every error type is documented."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings
from worker.errors import ERROR_TYPES

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table() -> None:
    for name in Settings.model_fields:
        env = {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL"}.get(name, f"STAYLER_{name.upper()}")
        assert f"| `{env}`" in CONFIGURATION or f"/ `{env}`" in CONFIGURATION, \
            f"{env} is not documented in docs/configuration.md"


def test_every_error_type_is_in_the_architecture() -> None:
    for code in ERROR_TYPES:
        assert f"`{code}`" in ARCHITECTURE, f"error_type {code} is not documented in docs/architecture.md"
