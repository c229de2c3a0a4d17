"""A full disk under the PostgreSQL datastore behaves as a full disk under
SQLite does (test_full_disk.py): writes answer a clear 503 `Status` with
reason ServiceUnavailable (never a 500), reads keep working, writes succeed
again once space is freed without a restart, and nothing acknowledged is lost
after a SIGKILL and a restart.

The shared PostgreSQL server's own disk is never filled: the test mounts a
small tmpfs, makes it a tablespace, and creates a fresh database in that
tablespace, so only this database's table files run out of space (PostgreSQL
answers SQLSTATE 53100 disk_full; its WAL stays on the main disk, so the
server stays healthy). The database, the tablespace and the mount are removed
afterwards, even when the test fails; their names are unique per run.

This needs root (to mount; without it the test is skipped unless CI is set)
and a PostgreSQL server on this machine, as the tablespace is a local
directory (skipped otherwise). It takes about 10 s."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from kapsel_e2e import POSTGRES_URL, KapselServer, assert_status, pod_manifest, psql
from test_full_disk import DISK_MB, big_pod, fill

#: PostgreSQL may find room inside pages it already has, so creates may
#: succeed after the disk is full (in practice the first one is refused).
MAX_CREATES = 400
#: Big pods created before the disk fills.
BEFORE = 5
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class SmallPostgresDisk:
    mount_point: Path  # the tmpfs the database's tablespace is on
    url: str  # the datastore URL of the database


@pytest.fixture
def small_pg_disk():
    """A fresh database whose tablespace is a tmpfs of DISK_MB; all removed afterwards."""
    if shutil.which("psql") is None:
        pytest.fail("psql is not installed; the PostgreSQL tests need it")
    parts = urllib.parse.urlsplit(POSTGRES_URL)
    if parts.hostname not in LOCAL_HOSTS:
        pytest.skip(f"PostgreSQL at {parts.hostname} is not on this machine: a tablespace there cannot be on our tmpfs")
    # The tablespace directory must belong to the OS user PostgreSQL runs as: the owner of its data directory.
    owner = os.stat(psql("SHOW data_directory").stdout.strip())

    # Not under pytest's tmp_path: /tmp/pytest-of-root is 0700, so the PostgreSQL
    # server (another OS user) could not reach a tablespace in it.
    base = Path(tempfile.mkdtemp(prefix="kapsel-e2e-pgdisk-", dir="/var/tmp"))
    base.chmod(0o755)
    mount_point = base / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700,uid={owner.st_uid},gid={owner.st_gid}",
         "tmpfs", str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        mount_point.rmdir()
        base.rmdir()
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs for the full-disk test: {mounted.stderr}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")

    suffix = uuid.uuid4().hex[:12]
    tablespace, database = f"kapsel_e2e_ts_{suffix}", f"kapsel_e2e_disk_{suffix}"
    failures = []
    try:
        psql(f"CREATE TABLESPACE \"{tablespace}\" LOCATION '{mount_point}'")
        psql(f'CREATE DATABASE "{database}" TABLESPACE "{tablespace}"')
        yield SmallPostgresDisk(mount_point,
                                urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, "")))
    finally:
        for sql in (f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', f'DROP TABLESPACE IF EXISTS "{tablespace}"'):
            dropped = psql(sql, check=False)
            if dropped.returncode != 0:
                failures.append(f"{sql}: {dropped.stderr.strip()}")
        unmounted = subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, text=True)
        if unmounted.returncode != 0:
            failures.append(f"umount -l {mount_point}: {unmounted.stderr.strip()}")
        else:
            # rmdir, never rm -r: nothing but the empty mount point may go.
            for path in (mount_point, base):
                try:
                    path.rmdir()
                except OSError as e:
                    failures.append(f"rmdir {path}: {e}")
    if failures:
        pytest.fail("cleaning up the full-disk database failed:\n" + "\n".join(failures), pytrace=False)


@pytest.fixture
def pg_server_on_small_disk(small_pg_disk, start_server) -> KapselServer:
    """A server on the small disk's database; stopped (SIGTERM, exit 0) before the database is dropped."""
    server = start_server("pg-server", extra_args=["--no-local-node"], datastore=small_pg_disk.url)
    yield server
    if server.running:
        server.stop()


def create(server: KapselServer, pod: dict):
    return server.api("POST", "/api/v1/namespaces/default/pods", json=pod)


def pod_names(server: KapselServer) -> set[str]:
    listed = server.api("GET", "/api/v1/namespaces/default/pods")
    assert listed.status_code == 200, (listed.status_code, listed.text)
    return {p["metadata"]["name"] for p in listed.json()["items"]}


def test_a_full_postgres_disk_refuses_writes_clearly_and_loses_nothing(small_pg_disk, pg_server_on_small_disk):
    server = pg_server_on_small_disk
    # Pods written before the disk fills: the reads below must see them. (On
    # a fresh database the very first big pod after the fill is refused: its
    # annotation goes to a TOAST table that has no page yet.)
    acknowledged = []
    for i in range(BEFORE):
        assert create(server, big_pod(f"before{i}")).status_code == 201
        acknowledged.append(f"before{i}")

    fill(small_pg_disk.mount_point / "filler")
    refused, refusals = [], []
    for i in range(MAX_CREATES):
        r = create(server, big_pod(f"p{i}"))
        assert r.status_code < 500 or r.status_code == 503, (r.status_code, r.text)
        if r.status_code == 201:
            acknowledged.append(f"p{i}")
        else:
            refused.append(f"p{i}")
            refusals.append(r)
            if len(refusals) >= 3:
                break
    assert refusals, f"the disk never filled up ({len(acknowledged)} pods created)"
    for refusal in refusals:
        status = assert_status(refusal, 503, "ServiceUnavailable")
        assert "no space left" in status["message"], status
    # Reads go on: the list, and one object.
    assert pod_names(server) >= set(acknowledged)
    got = server.api("GET", "/api/v1/namespaces/default/pods/before0")
    assert got.status_code == 200 and got.json()["metadata"]["annotations"]["ballast"] == "x" * 200_000

    # Space comes back: writes succeed again without a restart, the refused
    # big pod itself included (it left nothing behind: no AlreadyExists).
    os.remove(small_pg_disk.mount_point / "filler")
    retried = refused.pop(0)
    deadline = time.monotonic() + 20
    while True:
        r = create(server, big_pod(retried))
        if r.status_code == 201:
            break
        assert time.monotonic() < deadline, (r.status_code, r.text)
        time.sleep(0.5)
    acknowledged.append(retried)
    assert create(server, pod_manifest("after")).status_code == 201
    acknowledged.append("after")

    # A crash then: every acknowledged write is there, and no refused one ("nothing was written").
    server.kill()
    server.start()
    names = pod_names(server)
    missing = set(acknowledged) - names
    assert not missing, f"acknowledged but lost: {sorted(missing)}"
    written = set(refused) & names
    assert not written, f"refused with 503 but written: {sorted(written)}"
