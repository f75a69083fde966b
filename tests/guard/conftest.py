"""Guard fixtures: the session-wide OpenAI-compatible upstream on 127.0.0.1."""

from __future__ import annotations

import pytest
from guard_helpers import serve, upstream_app


@pytest.fixture(scope="session")
def upstream_url():
    app = upstream_app()
    with serve(app) as url:
        yield url
