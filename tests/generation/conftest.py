"""Shared fixtures for generation tests: a tiny random chat model saved to disk once per session."""

from __future__ import annotations

import pytest

from seawall.generation.tiny import build_tiny_chat_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat"))
