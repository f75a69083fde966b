"""Guard fixtures: the session-wide OpenAI-compatible upstream on 127.0.0.1, and a throwaway PostgreSQL."""

from __future__ import annotations

import pytest
from guard_helpers import PostgresCluster, postgres_bin_dir, serve, upstream_app


@pytest.fixture(scope="session")
def upstream_url():
    app = upstream_app()
    with serve(app) as url:
        yield url


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of its own (initdb + pg_ctl in a temporary folder); missing binaries fail the test."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH, in /usr/local/bin or "
            "/usr/lib/postgresql/*/bin: install them (apt-get install postgresql; .ci/run does) to test the "
            "PostgreSQL audit log"
        )
    cluster = PostgresCluster(bin_dir)
    yield cluster
    cluster.close()
