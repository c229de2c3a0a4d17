"""Fixtures of the end-to-end tier: real `kapsel serve` processes (see kapsel_e2e.py).

Every server a test starts is stopped with SIGTERM at its end and must exit 0.
PostgreSQL-backed servers get a fresh database per test, dropped afterwards.
"""

from __future__ import annotations

import shutil
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from kapsel_e2e import KAPSEL_BIN, POSTGRES_URL, KapselServer, create_pod, psql, push_images


@pytest.fixture(scope="session")
def kapsel_bin() -> Path:
    if not KAPSEL_BIN.is_file():
        pytest.fail(f"{KAPSEL_BIN} does not exist: run `cargo build -p kapsel` (or set KAPSEL_BIN)")
    return KAPSEL_BIN


@pytest.fixture
def start_server(kapsel_bin, tmp_path):
    """A factory: `start_server(name="s", extra_args=[...], datastore=None)`.

    A server started here (`wait=True`) has the standard images
    (kapsel_e2e.STANDARD_IMAGES) pushed into `default`. Every server still
    running at the end of the test is stopped with SIGTERM and must exit 0.
    """
    servers: list[KapselServer] = []

    def start(name: str = "server", extra_args: list[str] | None = None,
              datastore: str | None = None, wait: bool = True) -> KapselServer:
        server = KapselServer(tmp_path, name, extra_args, datastore)
        servers.append(server)
        if wait:
            server.start()
            push_images(server, "default")
        return server

    yield start
    failures = []
    for server in servers:
        if server.running:
            try:
                server.stop()
            except AssertionError as e:
                failures.append(str(e))
        server.stop_agent()
        server.close_log()
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


@pytest.fixture
def server(start_server) -> KapselServer:
    """A fresh SQLite-backed server."""
    return start_server()


@pytest.fixture
def postgres_url():
    """A fresh, empty PostgreSQL database for one test; dropped (WITH FORCE) after it."""
    if shutil.which("psql") is None:
        pytest.fail("psql is not installed; the PostgreSQL tests need it")
    name = f"kapsel_e2e_{uuid.uuid4().hex[:12]}"
    psql(f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(POSTGRES_URL)
    yield urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_server(postgres_url, start_server) -> KapselServer:
    """A fresh server on a fresh PostgreSQL database (stopped before the database is dropped)."""
    return start_server("pg-server", datastore=postgres_url)


# -- the compaction test needs a server older than one compaction period -----------
#
# `kapsel serve` compacts its change log every 60 s in the background (there is no
# flag to make that faster). So that the test of watching from a compacted
# resourceVersion costs no extra minute, its server is started (and written to)
# as soon as the session starts, and the test itself runs last.

COMPACTION_MARK = "needs_compaction"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{COMPACTION_MARK}: uses the session's early-started compacting server; runs last")


def pytest_collection_modifyitems(session, config, items):
    late = [i for i in items if i.get_closest_marker(COMPACTION_MARK)]
    items[:] = [i for i in items if not i.get_closest_marker(COMPACTION_MARK)] + late


class CompactingServer:
    def __init__(self, server: KapselServer, started_at: float, old_revision: str):
        self.server = server
        self.started_at = started_at
        self.old_revision = old_revision


@pytest.fixture(scope="session", autouse=True)
def _compacting_server(request, tmp_path_factory):
    if not any(i.get_closest_marker(COMPACTION_MARK) for i in request.session.items):
        yield None
        return
    if not KAPSEL_BIN.is_file():
        yield None
        return
    server = KapselServer(tmp_path_factory.mktemp("compaction"), "compacting",
                          ["--retained-changes", "5"])
    started_at = time.monotonic()
    server.start()
    push_images(server, "default")
    old_revision = server.api("GET", "/api/v1/namespaces/default/pods").json()["metadata"]["resourceVersion"]
    # More than 20 writes, so that the 5 retained changes start well after old_revision.
    for i in range(12):
        create_pod(server, "default", f"churn-{i}")
    for i in range(12):
        assert server.api("DELETE", f"/api/v1/namespaces/default/pods/churn-{i}").status_code == 200
    yield CompactingServer(server, started_at, old_revision)
    if server.running:
        server.stop()
    server.stop_agent()


@pytest.fixture
def compacting_server(_compacting_server) -> CompactingServer:
    assert _compacting_server is not None
    return _compacting_server
