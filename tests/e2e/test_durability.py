"""Durability: what the server acknowledged survives a crash (SIGKILL) and a
restart, on SQLite and on PostgreSQL; and the server's schema guard."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from kapsel_e2e import create_namespace, create_pod, pod_manifest

N = 50


def create_concurrently_then_crash(server, namespace: str) -> set[str]:
    """Creates N pods from 16 threads and SIGKILLs the server right after the last 2xx."""
    create_namespace(server, namespace)
    token, ca = server.token, str(server.ca)
    url = f"{server.url}/api/v1/namespaces/{namespace}/pods"
    local = threading.local()

    def create(i: int) -> tuple[str, int, str]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        name = f"pod-{i:03d}"
        r = local.session.post(url, json=pod_manifest(name), verify=ca, timeout=30,
                               headers={"Authorization": f"Bearer {token}"})
        return name, r.status_code, r.text

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(create, range(N)))
    server.kill()  # immediately after the last acknowledgement
    failures = [(n, c, t) for n, c, t in results if c != 201]
    assert not failures, failures
    return {name for name, _, _ in results}


def check_all_present(server, namespace: str, acknowledged: set[str]) -> None:
    server.start()
    items = server.api("GET", f"/api/v1/namespaces/{namespace}/pods").json()["items"]
    names = {p["metadata"]["name"] for p in items}
    assert acknowledged - names == set(), f"acknowledged but lost after SIGKILL: {sorted(acknowledged - names)}"
    assert len(items) == N
    for pod in items:
        assert pod["spec"]["containers"][0]["image"] == "app:1"


def test_acknowledged_creates_survive_sigkill_sqlite(server):
    acknowledged = create_concurrently_then_crash(server, "crash")
    check_all_present(server, "crash", acknowledged)


def test_acknowledged_creates_survive_sigkill_postgres(pg_server):
    acknowledged = create_concurrently_then_crash(pg_server, "crash")
    check_all_present(pg_server, "crash", acknowledged)


def resource_versions_keep_increasing(server) -> None:
    create_namespace(server, "dev")
    first = create_pod(server, "dev", "a")
    second = create_pod(server, "dev", "b")
    before = server.api("GET", "/api/v1/namespaces/dev/pods").json()["metadata"]["resourceVersion"]
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])

    server.stop()
    server.start()
    after_restart = server.api("GET", "/api/v1/namespaces/dev/pods").json()
    assert int(after_restart["metadata"]["resourceVersion"]) >= int(before)
    stored = {p["metadata"]["name"]: p["metadata"]["resourceVersion"] for p in after_restart["items"]}
    assert stored == {"a": first["metadata"]["resourceVersion"], "b": second["metadata"]["resourceVersion"]}
    third = create_pod(server, "dev", "c")
    assert int(third["metadata"]["resourceVersion"]) > int(before)

    server.kill()
    server.start()
    r = server.api("PATCH", "/api/v1/namespaces/dev/pods/a",
                   headers={"Content-Type": "application/merge-patch+json"},
                   json={"metadata": {"labels": {"after": "crash"}}})
    assert r.status_code == 200, r.text
    assert int(r.json()["metadata"]["resourceVersion"]) > int(third["metadata"]["resourceVersion"])
    # A watch from a revision before the restarts replays what came after it.
    r = server.api("GET", f"/api/v1/namespaces/dev/pods?watch=1&resourceVersion={before}&timeoutSeconds=1")
    assert r.status_code == 200, r.text
    events = [(e["type"], e["object"]["metadata"]["name"])
              for e in map(json.loads, r.text.splitlines())]
    assert events == [("ADDED", "c"), ("MODIFIED", "a")]


def test_resource_versions_keep_increasing_across_restarts_sqlite(server):
    resource_versions_keep_increasing(server)


def test_resource_versions_keep_increasing_across_restarts_postgres(pg_server):
    resource_versions_keep_increasing(pg_server)


def test_refuses_a_database_with_an_unknown_migration(server):
    create_namespace(server, "dev")
    server.stop()
    database = server.data_dir / "kapsel.db"
    with sqlite3.connect(database) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(_sqlx_migrations)")]
        assert "version" in columns, columns
        db.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)"
            " VALUES (99990101000000, 'from a newer kapsel', 1, X'00', 0)")
    db.close()

    process = server.spawn()
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.stop()
        raise AssertionError("kapsel serve started on a database with a migration it does not know")
    log = server.log().split("==== start")[-1]
    assert code != 0
    assert "99990101000000" in log and "migration" in log.lower(), log
    assert "panicked" not in log, log
    # The database is left as it was: the newer build's data is not touched.
    with sqlite3.connect(database) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM _sqlx_migrations ORDER BY version")]
        namespaces = [row[0] for row in db.execute("SELECT name FROM objects WHERE resource LIKE 'namespaces%'")]
    db.close()
    assert versions[-1] == 99990101000000
    assert "dev" in namespaces


def test_sigterm_ends_open_watches_and_exits_cleanly(server):
    """SIGTERM must not wait for long-running watches: the server ends them and exits 0."""
    create_namespace(server, "dev")
    watch = server.kubectl_popen("get", "pods", "-n", "dev", "-w")
    raw = requests.get(f"{server.url}/api/v1/namespaces/dev/pods?watch=1",
                       headers={"Authorization": f"Bearer {server.token}"},
                       verify=str(server.ca), stream=True, timeout=60)
    assert raw.status_code == 200
    time.sleep(1.0)  # both watches are established
    try:
        started = time.monotonic()
        server.stop(timeout=10)  # asserts exit code 0
        assert time.monotonic() - started < 10
        # The client sees its watch stream end.
        assert list(raw.iter_lines()) == []
    finally:
        watch.kill()
        watch.wait()
        raw.close()
