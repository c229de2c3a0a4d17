"""The embedded node agent of `kapsel serve` is a child process that
outlives it: restarting the supervisor restarts no pod (the new one adopts
the running agent), an agent that dies is started again by the supervisor,
and an agent whose supervisor stays away longer than --local-node-linger
stops with its pods."""

from __future__ import annotations

import os
import signal
import time

from kapsel_e2e import pod_manifest, push_image

PATIENCE = 30.0


def wait_for(what: str, check, timeout: float = PATIENCE):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s (last: {last!r})")


def running_worker(server):
    r = server.api("GET", "/api/v1/namespaces/default/pods/worker")
    assert r.status_code == 200, r.text
    pod = r.json()
    statuses = pod.get("status", {}).get("containerStatuses") or []
    if pod.get("status", {}).get("phase") == "Running" and statuses and "running" in statuses[0].get("state", {}):
        return pod
    return None


def ticks(server) -> int:
    """The last tick number the worker logged."""
    r = server.api("GET", "/api/v1/namespaces/default/pods/worker/log")
    assert r.status_code == 200, r.text
    numbers = [int(line.rsplit(" ", 1)[-1]) for line in r.text.splitlines() if "tick" in line]
    return numbers[-1] if numbers else -1


def start_worker(server):
    push_image(server, "default", "worker:1", sample="worker")
    r = server.api("POST", "/api/v1/namespaces/default/pods",
                   json=pod_manifest("worker", image="worker:1", scheduler=None))
    assert r.status_code == 201, r.text
    return wait_for("the worker running", lambda: running_worker(server))


def test_restarting_serve_restarts_no_pod(start_server):
    server = start_server()
    before = start_worker(server)
    agent = server.agent_pid()
    assert agent is not None and server.agent_alive()
    started_at = before["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    wait_for("a few ticks", lambda: ticks(server) >= 2)

    server.stop()
    # The supervisor is gone; its node agent and the pod go on.
    assert server.agent_alive(), "the node agent stopped with the supervisor"
    time.sleep(1.5)
    server.start()
    assert server.agent_pid() == agent, "a second agent was started instead of adopting the first"
    assert "adopted the running node agent" in server.log()

    after = wait_for("the worker running after the restart", lambda: running_worker(server))
    status = after["status"]["containerStatuses"][0]
    assert status["restartCount"] == 0, after["status"]
    assert status["state"]["running"]["startedAt"] == started_at, after["status"]
    # It kept working while the supervisor was away, and still does.
    seen = ticks(server)
    assert seen >= 3, seen
    wait_for("more ticks", lambda: ticks(server) > seen)


def test_an_agent_that_dies_is_started_again(start_server):
    server = start_server()
    start_worker(server)
    first = server.agent_pid()
    os.kill(first, signal.SIGKILL)
    second = wait_for("a new agent", lambda: (server.agent_pid() != first and server.agent_alive()) and server.agent_pid())
    assert second != first
    # The new agent takes the pod over (a run in progress when its agent went counts as a restart).
    # Until the new agent reports, the pod's status is still the old agent's (Running, no restart): wait for the takeover.
    def taken_over():
        pod = running_worker(server)
        return pod if pod and pod["status"]["containerStatuses"][0]["restartCount"] >= 1 else None
    pod = wait_for("the worker running again, taken over by the new agent", taken_over)
    node = server.api("GET", "/api/v1/nodes").json()["items"][0]
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"][0]
    assert ready["status"] == "True", node["status"]


def test_an_agent_whose_supervisor_stays_away_stops(start_server):
    server = start_server(extra_args=["--local-node-linger", "2"])
    start_worker(server)
    assert server.agent_alive()
    server.stop()
    # Lease renewals every 2 s fail from now on; after 2 s of them the agent stops, and its pods with it.
    wait_for("the agent to stop", lambda: not server.agent_alive(), timeout=20)


def test_no_local_node_stops_an_earlier_agent(start_server):
    server = start_server()
    assert server.agent_alive()
    server.stop()
    assert server.agent_alive()
    server.extra_args.append("--no-local-node")
    server.start()
    wait_for("the earlier agent to stop", lambda: not server.agent_alive(), timeout=20)
