"""A full disk under the data directory: writes answer a clear 503
`Status` (never a 500), nothing acknowledged is lost, reads keep working,
and writes succeed again once space is freed — also after a crash.

The data directory is put on a small tmpfs of its own (this needs root,
which CI has; elsewhere the test is skipped unless CI is set)."""

from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest

from kapsel_e2e import pod_manifest

DISK_MB = 48


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs for the full-disk test: {mounted.stderr}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path) -> None:
    """Writes `path` until the disk has no space left."""
    chunk = b"\0" * (1 << 20)
    with open(path, "wb") as f:
        while True:
            try:
                f.write(chunk)
                f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
        try:
            os.fsync(f.fileno())
        except OSError:
            pass


def big_pod(name: str) -> dict:
    pod = pod_manifest(name)
    pod["metadata"]["annotations"] = {"ballast": "x" * 200_000}
    return pod


def test_a_full_disk_refuses_writes_clearly_and_loses_nothing(start_server, small_disk):
    server = start_server(extra_args=["--no-local-node"])
    server.stop()
    # The same data directory, moved onto the small disk.
    subprocess.run(["cp", "-a", f"{server.data_dir}/.", str(small_disk)], check=True)
    subprocess.run(["rm", "-rf", str(server.data_dir)], check=True)
    server.data_dir.symlink_to(small_disk)
    server.start()

    fill(small_disk / "filler")
    acknowledged, refusals = [], []
    for i in range(200):
        r = server.api("POST", "/api/v1/namespaces/default/pods", json=big_pod(f"p{i}"))
        assert r.status_code < 500 or r.status_code == 503, (r.status_code, r.text)
        if r.status_code == 201:
            acknowledged.append(f"p{i}")
        else:
            refusals.append(r)
            if len(refusals) >= 3:
                break
    assert refusals, "the disk never filled up"
    status = refusals[0].json()
    assert refusals[0].status_code == 503 and status["reason"] == "ServiceUnavailable", status
    assert "no space left" in status["message"], status
    # Reads go on.
    listed = server.api("GET", "/api/v1/namespaces/default/pods")
    assert listed.status_code == 200
    assert {p["metadata"]["name"] for p in listed.json()["items"]} >= set(acknowledged)

    # Space comes back: writes succeed again, without a restart.
    os.remove(small_disk / "filler")
    deadline = time.monotonic() + 20
    while True:
        r = server.api("POST", "/api/v1/namespaces/default/pods", json=pod_manifest("after"))
        if r.status_code == 201:
            break
        assert time.monotonic() < deadline, (r.status_code, r.text)
        time.sleep(0.5)
    acknowledged.append("after")

    # A crash then: every acknowledged write is there.
    server.kill()
    server.start()
    names = {p["metadata"]["name"] for p in server.api("GET", "/api/v1/namespaces/default/pods").json()["items"]}
    missing = set(acknowledged) - names
    assert not missing, f"acknowledged but lost: {sorted(missing)}"
