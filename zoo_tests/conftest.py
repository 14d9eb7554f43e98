"""Fixtures shared by several test modules (each opts in with ``pytestmark``)."""

import pytest


@pytest.fixture
def private_cache(tmp_path_factory, monkeypatch):
    """A ``ZOO_CACHE_DIR`` of the session's own (tokenizers, token caches, teacher logits)."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
