"""Plug-ins end to end: the defaults `kapsel serve` installs, `kapsel plugin
test` against the default plug-ins' cases, and hostile guests that fail alone
— refused at upload, or failing their own calls under their failure policy —
while the API's latency for everything else stays where it was.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

import requests

from kapsel_e2e import KAPSEL_BIN, REPO, assert_status, child_env, create_namespace

import subprocess

GUESTS = REPO / "target" / "plugins" / "wasm32-wasip2" / "release"
PLUGINS = "/apis/kapsel.io/v1alpha1/plugins"


def run_kapsel(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(KAPSEL_BIN), *args], capture_output=True, text=True,
                          env=child_env(), cwd=cwd, timeout=120)


def annotations(namespace: dict) -> dict:
    return namespace["metadata"].get("annotations", {})


def test_default_plugins_are_installed_and_give_namespaces_networks(server):
    listed = server.kapsel("get", "plugins")
    assert listed.returncode == 0, listed.stderr
    for name, world in [("spread", "scheduler-extension"), ("namespace-ipam", "network-driver"),
                        ("local-volumes", "storage-driver")]:
        line = next((l for l in listed.stdout.splitlines() if l.startswith(name + " ")), None)
        assert line is not None, listed.stdout
        assert world in line and "Active" in line, line

    created = create_namespace(server, "team-a")
    assert annotations(created)["network.kapsel.io/driver"] == "namespace-ipam", created
    assert annotations(created)["network.kapsel.io/segment"].endswith("/24"), created
    # The default namespace, created before the plug-ins loaded, gets one from the controller.
    deadline = time.monotonic() + 20
    while True:
        default = server.api("GET", "/api/v1/namespaces/default").json()
        segment = annotations(default).get("network.kapsel.io/segment")
        if segment:
            break
        assert time.monotonic() < deadline, default
        time.sleep(0.2)
    assert segment != annotations(created)["network.kapsel.io/segment"]


def test_default_plugins_pass_their_cases(tmp_path):
    for crate, world in [("spread", "scheduler-extension"), ("namespace-ipam", "network-driver"),
                         ("local-volumes", "storage-driver")]:
        component = GUESTS / f"{crate.replace('-', '_')}.wasm"
        result = run_kapsel("plugin", "test", str(component), "--world", world,
                            "--cases", str(REPO / "plugins" / crate / "cases.yaml"), cwd=tmp_path)
        assert result.returncode == 0, f"{crate}:\n{result.stdout}{result.stderr}"
        assert "FAIL" not in result.stdout and " 0 failed" in result.stdout, result.stdout


def test_plugin_test_reports_what_differs(tmp_path):
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n"
        "  - name: wrong expectation\n"
        "    steps:\n"
        "      - call: create-network\n"
        "        with: {namespace: dev}\n"
        "        expect: {cidr: 192.168.0.0/24}\n"
        "  - name: right expectation\n"
        "    steps:\n"
        "      - call: create-network\n"
        "        with: {namespace: dev}\n"
        "        expect: {cidr: 10.64.0.0/24}\n"
    )
    result = run_kapsel("plugin", "test", str(GUESTS / "namespace_ipam.wasm"), "--world", "network-driver",
                        "--cases", str(cases), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL  wrong expectation" in result.stdout, result.stdout
    assert "differs at .cidr" in result.stdout, result.stdout
    assert "PASS  right expectation" in result.stdout, result.stdout
    assert "2 cases: 1 passed, 1 failed" in result.stdout, result.stdout
    # The wrong world is refused before any case runs.
    wrong = run_kapsel("plugin", "test", str(GUESTS / "namespace_ipam.wasm"), "--world", "storage-driver",
                       "--cases", str(cases), cwd=tmp_path)
    assert wrong.returncode == 1 and "does not fit the storage-driver world" in wrong.stderr, wrong.stderr


def p99_of_gets(server, count: int = 400) -> float:
    # (verify is passed per request: a REQUESTS_CA_BUNDLE in the environment would override the session's.)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {server.token}"
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        r = session.get(f"{server.url}/api/v1/namespaces/default", verify=str(server.ca))
        timings.append(time.perf_counter() - started)
        assert r.status_code == 200, r.text
    return statistics.quantiles(timings, n=100)[98]


def test_hostile_plugins_fail_alone_and_the_api_keeps_its_latency(start_server, tmp_path):
    server = start_server(extra_args=["--no-default-plugins"])
    # What is not a plug-in for the world is refused, and nothing changes.
    spread = (GUESTS / "spread.wasm").read_bytes()
    for data, reason in [(b"\0asm\x01\0\0\0", "not a component: a core WebAssembly module"),
                         (b"\x7fELF" + os.urandom(4096), "not a WebAssembly binary"),
                         (spread[: len(spread) // 2], "not a valid component"),
                         (spread, "does not fit the network-driver world")]:
        path = tmp_path / "bad.wasm"
        path.write_bytes(data)
        pushed = server.kapsel("plugin", "push", str(path), "--name", "bad", "--world", "network-driver")
        assert pushed.returncode != 0, f"{reason}: {pushed.stdout}"
        assert 'Plugin "bad" is invalid: component: ' + reason in pushed.stderr, pushed.stderr
    assert_status(server.api("GET", f"{PLUGINS}/bad"), 404, "NotFound")

    baseline = p99_of_gets(server)

    plugin = {"apiVersion": "kapsel.io/v1alpha1", "kind": "Plugin", "metadata": {"name": "hostile"},
              "spec": {"world": "network-driver", "failurePolicy": "Ignore",
                       "limits": {"deadlineMilliseconds": 100}}}
    assert server.api("POST", PLUGINS, json=plugin).status_code == 201
    pushed = server.kapsel("plugin", "push", str(GUESTS / "hostile_network.wasm"), "--name", "hostile")
    assert pushed.returncode == 0, pushed.stderr

    # Namespaces whose network calls loop to their deadline, hog memory or trap, back to back.
    stop = threading.Event()
    outcomes: list[int] = []

    def misbehave():
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {server.token}"
        n = 0
        while not stop.is_set():
            kind = ("loop", "hog", "trap")[n % 3]
            r = session.post(f"{server.url}/api/v1/namespaces", verify=str(server.ca),
                             json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"{kind}-{n}"}})
            outcomes.append(r.status_code)
            n += 1

    thread = threading.Thread(target=misbehave)
    thread.start()
    try:
        time.sleep(0.5)
        under_load = p99_of_gets(server)
    finally:
        stop.set()
        thread.join(timeout=30)
    print(f"p99 of GET /api/v1/namespaces/default: {baseline * 1000:.2f} ms alone, "
          f"{under_load * 1000:.2f} ms while {len(outcomes)} hostile calls ran")
    # Under Ignore every create went through, without a network.
    assert outcomes and set(outcomes) == {201}, outcomes
    # Loose enough for a busy 2-core machine, tight enough to catch a blocked runtime (a looping call is 100 ms).
    assert under_load <= max(3 * baseline, baseline + 0.030), (baseline, under_load)

    assert server.api("GET", "/readyz").status_code == 200
    deadline = time.monotonic() + 10
    while True:
        status = server.api("GET", f"{PLUGINS}/hostile").json()["status"]
        if status.get("phase") == "Degraded":
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["errors"] >= 3 and status["lastError"], status
    events = server.api("GET", "/api/v1/namespaces/default/events").json()["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == "hostile"}
    assert {"PluginDegraded", "PluginCallSkipped"} <= reasons, reasons
