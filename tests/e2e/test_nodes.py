"""Pods that run, with real processes: `kapsel serve --no-local-node` and two
`kapsel node` agents of different sizes, each with its own node token. Pods
are spread over both by the scheduler and its `spread` extension; one too
large for both waits with the counting message; the sample workloads of
examples/ run to their ends (hello Succeeds with its output in `kapsel logs`
and `kubectl logs`, fail goes to CrashLoopBackOff, memhog is OOMKilled,
worker keeps Running); an agent killed and started again takes its pods
over (restart counts go on); and when one agent is killed for good its node
is lost within 10 s and its pods fail with it after the grace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kapsel_e2e import KAPSEL_BIN, child_env

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ROOT / "target" / "workloads" / "wasm32-wasip2" / "release"


def workload(name: str) -> Path:
    path = WORKLOADS / f"{name}.wasm"
    if not path.is_file():
        pytest.fail(f"{path} does not exist: `cargo build -p kapsel` builds examples/workloads")
    return path


class NodeAgent:
    """A `kapsel node` process with its own node token."""

    def __init__(self, server, name: str, *flags: str):
        created = server.kapsel("token", "create", "--node", name)
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip()
        self.name = name
        self.log_path = server.workdir / f"node-{name}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(KAPSEL_BIN), "node", "--server", server.url, "--token", token,
             "--certificate-authority", str(server.ca), "--name", name, "--listen", "127.0.0.1:0",
             "--ingress-listen", "127.0.0.1:0", "--data-dir", str(server.workdir / f"node-{name}"), *flags],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=child_env(), cwd=server.workdir,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
            assert self.proc.returncode == 0, self.log()[-3000:]
        self._log.close()


def get(server, path: str) -> dict:
    r = server.api("GET", path)
    assert r.status_code == 200, r.text
    return r.json()


def until(what: str, check, timeout: float = 30.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def pod(server, name: str) -> dict:
    return get(server, f"/api/v1/namespaces/default/pods/{name}")


def container_state(p: dict) -> dict:
    statuses = p.get("status", {}).get("containerStatuses") or [{}]
    return statuses[0].get("state", {})


def create(server, manifest: dict) -> None:
    r = server.api("POST", "/api/v1/namespaces/default/pods", json=manifest)
    assert r.status_code == 201, r.text


def sized(name: str, image: str, cpu: str, labels: dict | None = None, restart: str = "Never") -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"restartPolicy": restart,
                     "containers": [{"name": "main", "image": image,
                                     "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}}


BIG = ("--capacity", "cpu=4,memory=4Gi,pods=20", "--labels", "topology.kubernetes.io/zone=b")


def test_pods_spread_run_to_their_ends_and_fail_with_a_lost_node(start_server):
    server = start_server("supervisor", extra_args=["--no-local-node", "--node-pod-grace", "5"])
    small = NodeAgent(server, "small", "--capacity", "cpu=2,memory=2Gi,pods=20", "--labels", "topology.kubernetes.io/zone=a")
    big = NodeAgent(server, "big", *BIG)
    try:
        def ready_nodes():
            nodes = get(server, "/api/v1/nodes")["items"]
            return sorted(n["metadata"]["name"] for n in nodes
                          if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]))
        assert until("both nodes ready", lambda: ready_nodes() == ["big", "small"] and ready_nodes())
        def leases():
            items = get(server, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases")["items"]
            return sorted(l["metadata"]["name"] for l in items)
        until("both leases renewed", lambda: leases() == ["big", "small"])

        for image in ("hello", "fail", "worker", "memhog"):
            pushed = server.kapsel("push", str(workload(image)), f"{image}:1")
            assert pushed.returncode == 0, pushed.stderr
            assert f"pushed {image}:1 to namespace default" in pushed.stdout

        # Four workers of one app: spread over both nodes, each Running.
        for i in range(4):
            create(server, sized(f"web-{i}", "worker:1", "250m", {"app": "web"}, restart="Always"))
        placed = until("web pods running", lambda: (
            [p for p in (pod(server, f"web-{i}") for i in range(4)) if p.get("status", {}).get("phase") == "Running"]
            if all(pod(server, f"web-{i}").get("status", {}).get("phase") == "Running" for i in range(4)) else None))
        nodes = {p["spec"]["nodeName"] for p in placed}
        assert nodes == {"small", "big"}, nodes
        running = placed[0]
        assert container_state(running).get("running", {}).get("startedAt"), running["status"]
        conditions = {c["type"]: c["status"] for c in running["status"]["conditions"]}
        assert conditions["PodScheduled"] == "True" and conditions["Ready"] == "True", conditions

        # Too large for both: it waits, and says why per node.
        create(server, sized("huge", "hello:1", "8"))
        waiting = until("huge waits", lambda: next((c for c in pod(server, "huge").get("status", {}).get("conditions", [])
                                                   if c["type"] == "PodScheduled" and c["status"] == "False"), None))
        assert waiting["reason"] == "Unschedulable"
        assert waiting["message"] == "0/2 nodes are available: 2 Insufficient cpu.", waiting

        # The sample workloads of examples/ run to their ends.
        for example in ("hello", "fail", "memhog"):
            applied = server.kapsel("apply", "-f", str(ROOT / "examples" / f"{example}.yaml"))
            assert applied.returncode == 0, applied.stderr
        done = until("hello succeeds", lambda: pod(server, "hello") if pod(server, "hello").get("status", {}).get("phase") == "Succeeded" else None)
        assert container_state(done)["terminated"]["reason"] == "Completed"
        assert container_state(done)["terminated"]["exitCode"] == 0
        # Its output, relayed from its node by the supervisor, to kapsel and kubectl alike.
        logs = server.kapsel("logs", "hello")
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout.splitlines() == ["Hello from Kapsel", "args: hello --from examples/hello.yaml", "GREETING=Grüezi"], logs.stdout
        assert server.kubectl("logs", "hello").stdout == logs.stdout
        tail = server.kapsel("logs", "web-0", "--tail", "1")
        assert tail.returncode == 0 and len(tail.stdout.splitlines()) == 1 and tail.stdout.startswith("worker: tick"), tail
        crashing = until("fail crash-loops", lambda: (p := pod(server, "fail")) and
                         container_state(p).get("waiting", {}).get("reason") == "CrashLoopBackOff" and p)
        assert "back-off" in container_state(crashing)["waiting"]["message"]
        last = crashing["status"]["containerStatuses"][0]["lastState"]["terminated"]
        # WASI 0.2's exit carries success or failure only: `exit(3)` reaches the host as 1.
        assert last["exitCode"] == 1 and last["reason"] == "Error", last
        assert "giving up on purpose" in server.kapsel("logs", "fail").stdout
        listing = server.kapsel("get", "pods")
        assert "CrashLoopBackOff" in listing.stdout, listing.stdout
        hog = until("memhog is OOMKilled", lambda: (p := pod(server, "memhog")) and p.get("status", {}).get("phase") == "Failed" and p)
        assert container_state(hog)["terminated"]["reason"] == "OOMKilled", hog["status"]

        # Deleting a running pod is graceful: its node stops it, then the object goes.
        on_big = [p["metadata"]["name"] for p in placed if p["spec"]["nodeName"] == "big"]
        doomed = on_big.pop()
        deleted = server.kapsel("delete", "pod", doomed)
        assert deleted.returncode == 0, deleted.stderr
        until(f"{doomed} gone", lambda: server.api("GET", f"/api/v1/namespaces/default/pods/{doomed}").status_code == 404, timeout=10)
        assert "pod stopped and deleted" in big.log()
        placed = [p for p in placed if p["metadata"]["name"] != doomed]

        # The big agent is killed and comes straight back (same name, same data dir): it takes its
        # pods over from their status — each worker started again as restart 1, the run that went
        # with the agent as its last state, that run's output as the previous log.
        big.kill()
        big._log.close()
        big = NodeAgent(server, "big", *BIG)
        assert on_big, placed
        for name in on_big:
            again = until(f"{name} runs again", lambda: (p := pod(server, name)) and
                          (s := p["status"]["containerStatuses"][0])["restartCount"] == 1 and "running" in s["state"] and p)
            last = again["status"]["containerStatuses"][0]["lastState"]["terminated"]
            assert (last["exitCode"], last["reason"]) == (137, "ContainerStatusUnknown"), last
        previous = server.kapsel("logs", on_big[0], "-p")
        assert previous.returncode == 0 and "worker: tick" in previous.stdout, previous

        # One agent dies: its node is lost within 10 s (and a bit), its pods fail after the 5 s grace.
        on_small = [p["metadata"]["name"] for p in placed if p["spec"]["nodeName"] == "small"]
        killed_at = time.monotonic()
        small.kill()
        lost = until("small is lost", lambda: next((c for c in get(server, "/api/v1/nodes/small")["status"]["conditions"]
                                                    if c["type"] == "Ready" and c["reason"] == "NodeLost"), None), timeout=20)
        assert lost["status"] == "False"
        assert time.monotonic() - killed_at < 16
        for name in on_small:
            failed = until(f"{name} fails with its node", lambda: (p := pod(server, name)) and p["status"]["phase"] == "Failed" and p, timeout=20)
            assert failed["status"]["reason"] == "NodeLost"
        assert time.monotonic() - killed_at < 30
        survivors = [p["metadata"]["name"] for p in placed if p["spec"]["nodeName"] == "big"]
        assert all(pod(server, name)["status"]["phase"] == "Running" for name in survivors)
        events = server.kubectl("get", "events", "-o", "json")
        reasons = {e["reason"] for e in json.loads(events.stdout)["items"]}
        assert {"Scheduled", "FailedScheduling", "NodeLost", "Pulled", "Started", "BackOff"} <= reasons, reasons
    finally:
        for agent in (small, big):
            if agent.proc.poll() is None:
                agent.stop()
