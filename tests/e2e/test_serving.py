"""Serving end to end: a pod whose component serves wasi:http runs on the
local node, Ready; `kubectl expose` puts a Service in front of it; the
node's ingress (its address in the Node's `kapsel.io/ingress` annotation)
routes `Host: <service>.<namespace>` and `/<namespace>/<service>/…` to it
with the proxy headers, spreads requests over the pods the Service selects,
and answers 404 / 503 with a body that says why."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import requests

from kapsel_e2e import push_image

PATIENCE = 30.0


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def ingress_of(server) -> str:
    nodes = server.api("GET", "/api/v1/nodes").json()["items"]
    urls = [n["metadata"].get("annotations", {}).get("kapsel.io/ingress") for n in nodes]
    urls = [u for u in urls if u]
    assert urls, nodes
    return urls[0]


def serving_pod(name: str, labels: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": {
        "containers": [{"name": "main", "image": "http-hello:1", "resources": {"limits": {"memory": "64Mi"}},
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}


def wait_ready(server, namespace: str, name: str) -> dict:
    deadline = time.monotonic() + PATIENCE
    while True:
        pod = server.api("GET", f"/api/v1/namespaces/{namespace}/pods/{name}").json()
        conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        if conditions.get("Ready") == "True":
            return pod
        assert time.monotonic() < deadline, pod
        time.sleep(0.2)


def get_until(url: str, wanted, **kwargs) -> requests.Response:
    """GETs `url` until `wanted(response)` (the ingress learns of a new Service by its watch)."""
    deadline = time.monotonic() + PATIENCE
    while True:
        response = requests.get(url, timeout=10, **kwargs)
        if wanted(response):
            return response
        assert time.monotonic() < deadline, (response.status_code, response.text)
        time.sleep(0.2)


def test_a_service_routes_to_its_ready_pods_through_the_ingress(server):
    ok(server.kubectl("create", "ns", "shop"))
    push_image(server, "shop", "http-hello:1", sample="http-hello")
    for name in ("web-1", "web-2"):
        r = server.api("POST", "/api/v1/namespaces/shop/pods", json=serving_pod(name, {"app": "web"}))
        assert r.status_code == 201, r.text
    addresses = set()
    for name in ("web-1", "web-2"):
        pod = wait_ready(server, "shop", name)
        assert pod["status"]["phase"] == "Running", pod["status"]
        # Its address from the network driver (namespace-ipam) stays through the node's status reports.
        assert pod["status"].get("podIP", "").startswith("10.64."), pod["status"]
        addresses.add(pod["status"]["podIP"])
    assert len(addresses) == 2, addresses
    ok(server.kubectl("expose", "pod", "web-1", "-n", "shop", "--port", "80", "--name", "web", "--selector", "app=web"))
    ingress = ingress_of(server)

    # By host name (any port), then by path with the prefix removed.
    first = get_until(f"{ingress}/", lambda r: r.status_code == 200, headers={"Host": "web.shop:8080"})
    assert first.text.startswith("Hello from web-"), first.text
    seen = {requests.get(f"{ingress}/", headers={"Host": "web.shop"}, timeout=10).text.strip() for _ in range(10)}
    assert seen == {"Hello from web-1", "Hello from web-2"}, seen
    echoed = requests.get(f"{ingress}/shop/web/echo-headers?x=1", timeout=10)
    assert echoed.status_code == 200, echoed.text
    headers = dict(line.split(": ", 1) for line in echoed.text.splitlines() if ": " in line)
    assert headers.get("x-forwarded-prefix") == "/shop/web", echoed.text
    assert headers.get("x-forwarded-for") == "127.0.0.1", echoed.text
    assert headers.get("x-forwarded-proto") == "http", echoed.text
    assert headers.get("forwarded", "").startswith("for=127.0.0.1;"), echoed.text

    # A name that is no service: 404; a service that selects no ready pod: 503 saying so.
    missing = requests.get(f"{ingress}/", headers={"Host": "nothing.shop"}, timeout=10)
    assert missing.status_code == 404 and 'service "nothing" not found in namespace "shop"' in missing.text, missing.text
    ok(server.kubectl("create", "service", "clusterip", "empty", "-n", "shop", "--tcp", "80:8080"))
    empty = get_until(f"{ingress}/shop/empty/", lambda r: r.status_code != 404)
    assert empty.status_code == 503 and "has no ready pod" in empty.text, empty.text

    # A client that opens many connections and sends nothing does not stop others.
    address = urlsplit(ingress)
    idle = [socket.create_connection((address.hostname, address.port)) for _ in range(200)]
    try:
        assert requests.get(f"{ingress}/", headers={"Host": "web.shop"}, timeout=10).text.startswith("Hello from web-")
    finally:
        for connection in idle:
            connection.close()

    # The pods go: the service answers 503.
    ok(server.kubectl("delete", "pod", "web-1", "web-2", "-n", "shop", "--grace-period", "0"))
    gone = get_until(f"{ingress}/", lambda r: r.status_code == 503, headers={"Host": "web.shop"})
    assert "service shop/web has no ready pod" in gone.text, gone.text


def test_a_service_spreads_requests_over_pods_on_two_nodes(start_server):
    from test_nodes import NodeAgent

    server = start_server("supervisor", extra_args=["--no-local-node"])
    agents = [NodeAgent(server, name) for name in ("n1", "n2")]
    try:
        push_image(server, "default", "http-hello:1", sample="http-hello")
        for name, node in (("web-a", "n1"), ("web-b", "n2"), ("other", "n2")):
            manifest = serving_pod(name, {"app": "web" if name != "other" else "other"})
            manifest["spec"]["nodeName"] = node
            r = server.api("POST", "/api/v1/namespaces/default/pods", json=manifest)
            assert r.status_code == 201, r.text
        for name in ("web-a", "web-b", "other"):
            wait_ready(server, "default", name)
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
        assert server.api("POST", "/api/v1/namespaces/default/services", json=service).status_code == 201
        nodes = {n["metadata"]["name"]: n["metadata"]["annotations"]["kapsel.io/ingress"]
                 for n in server.api("GET", "/api/v1/nodes").json()["items"]}
        # Either node's ingress reaches the pods of both.
        for node, ingress in nodes.items():
            get_until(f"{ingress}/", lambda r: r.status_code == 200, headers={"Host": "web.default"})
            deadline = time.monotonic() + PATIENCE
            seen: set[str] = set()
            while seen != {"Hello from web-a", "Hello from web-b"}:
                assert time.monotonic() < deadline, (node, seen)
                seen.add(requests.get(f"{ingress}/default/web/", timeout=10).text.strip())
        # The forwarding header reaches no pod its service does not select.
        other_uid = server.api("GET", "/api/v1/namespaces/default/pods/other").json()["metadata"]["uid"]
        forged = requests.get(f"{nodes['n2']}/", headers={"X-Kapsel-Backend": f"default/web/{other_uid}"}, timeout=10)
        assert forged.status_code == 503 and "is not serving on this node" in forged.text, forged.text
    finally:
        for agent in agents:
            agent.stop()


def test_a_pod_that_does_not_answer_in_time_gets_a_504_and_others_go_on(start_server):
    server = start_server("slow", extra_args=["--ingress-request-timeout", "1"])
    push_image(server, "default", "http-hello:1", sample="http-hello")
    r = server.api("POST", "/api/v1/namespaces/default/pods", json=serving_pod("slow", {"app": "slow"}))
    assert r.status_code == 201, r.text
    wait_ready(server, "default", "slow")
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "slow"},
               "spec": {"selector": {"app": "slow"}, "ports": [{"port": 80}]}}
    assert server.api("POST", "/api/v1/namespaces/default/services", json=service).status_code == 201
    ingress = ingress_of(server)
    get_until(f"{ingress}/default/slow/", lambda r: r.status_code == 200)
    started = time.monotonic()
    late = requests.get(f"{ingress}/default/slow/sleep?ms=20000", timeout=30)
    assert late.status_code == 504 and "did not answer within 1 s" in late.text, late.text
    assert time.monotonic() - started < 10
    # Its instance was stopped with the request; the pod answers the next one.
    assert requests.get(f"{ingress}/default/slow/", timeout=10).text == "Hello from slow\n"
