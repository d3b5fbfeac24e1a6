"""core.settings: read from the environment and validated."""

from __future__ import annotations

import pytest

from core.settings import Settings


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("STAYLER_WORKER_PROCESSES", "4")
    monkeypatch.setenv("STAYLER_MODEL_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    settings = Settings()
    assert settings.database_url == "postgresql://x/y"
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.intra_op_threads >= 1
    monkeypatch.setenv("STAYLER_CLAIM_BATCH_SIZE", "0")
    with pytest.raises(ValueError, match="claim_batch_size"):
        Settings()
