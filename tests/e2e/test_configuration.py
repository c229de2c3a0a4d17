"""ConfigMaps and Secrets end to end, with kubectl as people use it: made by
`kubectl create configmap|secret`, given to a pod as environment variables
and as read-only files on the local node, kept out of a `view` tenant's
reach and out of Events and the server's log."""

from __future__ import annotations

import json
import time
from pathlib import Path

from kapsel_e2e import push_image, tenant_kubeconfig, create_token

PATIENCE = 30.0


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def wait_for_phase(server, namespace: str, name: str, phases: set[str]) -> dict:
    deadline = time.monotonic() + PATIENCE
    while True:
        pod = server.api("GET", f"/api/v1/namespaces/{namespace}/pods/{name}").json()
        if pod.get("status", {}).get("phase") in phases:
            return pod
        assert time.monotonic() < deadline, json.dumps(pod, indent=1)
        time.sleep(0.2)


def configured_pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "restartPolicy": "Never",
        "volumes": [{"name": "conf", "configMap": {"name": "settings", "items": [{"key": "app.toml", "path": "app.toml"}]}},
                    {"name": "creds", "secret": {"secretName": "db"}}],
        "containers": [{
            "name": "main", "image": "hello:1",
            "args": ["--env", "APP_color", "--env", "DB_PASSWORD", "--cat", "/etc/app/app.toml", "--cat", "/run/creds/password"],
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "APP_"}],
            "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
            "volumeMounts": [{"name": "conf", "mountPath": "/etc/app"}, {"name": "creds", "mountPath": "/run/creds", "readOnly": True}],
        }]}}


def test_a_pod_reads_its_config_map_and_secret_as_env_and_files(server, tmp_path):
    ok(server.kubectl("create", "ns", "shop"))
    push_image(server, "shop", "hello:1")
    ok(server.kubectl("create", "configmap", "settings", "-n", "shop",
                      "--from-literal=color=blue", "--from-literal=app.toml=port = 8080"))
    ok(server.kubectl("create", "secret", "generic", "db", "-n", "shop", "--from-literal=password=hunter2"))
    listed = ok(server.kubectl("get", "secrets", "-n", "shop"))
    assert listed.split("\n")[1].split()[:3] == ["db", "Opaque", "1"], listed

    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps(configured_pod("reader")))
    ok(server.kubectl("apply", "-n", "shop", "-f", str(manifest)))
    pod = wait_for_phase(server, "shop", "reader", {"Succeeded", "Failed"})
    log = ok(server.kubectl("logs", "reader", "-n", "shop"))
    assert pod["status"]["phase"] == "Succeeded", json.dumps(pod["status"], indent=1) + log
    for line in ("APP_color=blue", "DB_PASSWORD=hunter2", "/etc/app/app.toml: port = 8080", "/run/creds/password: hunter2"):
        assert line in log, log

    # A pod whose secret is missing waits, says why, and starts once it exists.
    missing = configured_pod("waiting")
    missing["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] = "later"
    manifest.write_text(json.dumps(missing))
    ok(server.kubectl("apply", "-n", "shop", "-f", str(manifest)))
    deadline = time.monotonic() + PATIENCE
    while True:
        status = server.api("GET", "/api/v1/namespaces/shop/pods/waiting").json().get("status", {})
        waiting = (status.get("containerStatuses") or [{}])[0].get("state", {}).get("waiting", {})
        if waiting.get("reason") == "CreateContainerConfigError":
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert waiting["message"] == 'secret "later" not found in namespace "shop"', waiting
    ok(server.kubectl("create", "secret", "generic", "later", "-n", "shop", "--from-literal=password=p2"))
    assert wait_for_phase(server, "shop", "waiting", {"Succeeded", "Failed"})["status"]["phase"] == "Succeeded"

    # The secret's value is in no Event and not in the server's log.
    events = server.api("GET", "/api/v1/namespaces/shop/events").text
    assert "hunter2" not in events and "aHVudGVyMg" not in events
    assert "hunter2" not in server.log()

    # A `view` tenant reads the config map but not the secret; `edit` reads both.
    viewer = tenant_kubeconfig(server, create_token(server, "vera", {"shop": "view"}), tmp_path / "vera.yaml")
    ok(server.kubectl("get", "configmap", "settings", "-n", "shop", kubeconfig=viewer))
    refused = server.kubectl("get", "secret", "db", "-n", "shop", kubeconfig=viewer)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr
    editor = tenant_kubeconfig(server, create_token(server, "ed", {"shop": "edit"}), tmp_path / "ed.yaml")
    shown = json.loads(ok(server.kubectl("get", "secret", "db", "-n", "shop", "-o", "json", kubeconfig=editor)))
    assert shown["data"]["password"] == "aHVudGVyMg==", shown


def test_the_configured_example_runs_as_documented(server):
    """examples/configured.yaml (used by docs/configuration.md), applied with `kapsel apply`."""
    push_image(server, "default", "hello:1")
    example = Path(__file__).resolve().parents[2] / "examples" / "configured.yaml"
    applied = ok(server.kapsel("apply", "-f", str(example)))
    assert applied.split() == ["configmap/settings", "created", "secret/db", "created", "pod/reader", "created"], applied
    pod = wait_for_phase(server, "default", "reader", {"Succeeded", "Failed"})
    log = ok(server.kapsel("logs", "reader"))
    assert pod["status"]["phase"] == "Succeeded", log
    for line in ("APP_color=blue", "DB_PASSWORD=hunter2", "/etc/app/app.toml: port = 8080", "/run/creds/password: hunter2"):
        assert line in log, log
