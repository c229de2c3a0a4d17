"""Workload images end to end: `kapsel push FILE NAME:TAG` of a built sample
component makes an Artifact that `kapsel get artifacts` and kubectl show, its
bytes come back from the blob endpoint, and a pod naming an image its
namespace did not push is refused with the 422 that says what to push — by
kubectl, the kapsel CLI and raw HTTP alike."""

from __future__ import annotations

import hashlib
import time

from kapsel_e2e import UNPLACED, assert_status, pod_manifest, workload

ARTIFACTS = "/apis/kapsel.io/v1alpha1/namespaces/{}/artifacts"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_kapsel_push_makes_an_artifact_that_get_shows(server):
    hello = workload("hello")
    data = hello.read_bytes()
    digest = sha256(data)

    pushed = server.kapsel("push", str(hello), "hello:1")
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert pushed.stdout.strip() == f"pushed hello:1 to namespace default ({digest}, {len(data)} bytes)", pushed.stdout
    # The same bytes under another tag, and into another namespace: one image each.
    assert server.kapsel("push", str(hello), "hello:stable").returncode == 0
    assert server.api("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": "dev"}}).status_code == 201
    into_dev = server.kapsel("push", str(hello), "hello:1", "-n", "dev")
    assert into_dev.returncode == 0 and "to namespace dev" in into_dev.stdout, into_dev.stdout + into_dev.stderr

    artifact = server.api("GET", f"{ARTIFACTS.format('default')}/hello").json()
    assert artifact["kind"] == "Artifact" and artifact["apiVersion"] == "kapsel.io/v1alpha1", artifact
    assert artifact["spec"]["tags"] == {"1": digest, "stable": digest}, artifact
    assert [(i["digest"], i["size"]) for i in artifact["spec"]["images"]] == [(digest, len(data))], artifact
    in_dev = server.api("GET", f"{ARTIFACTS.format('dev')}/hello").json()
    assert in_dev["spec"]["tags"] == {"1": digest}, in_dev

    # `kapsel get artifacts`: its tags and how many images it has.
    listed = server.kapsel("get", "artifacts")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "TAGS", "IMAGES"], listed.stdout
    row = next((r.split() for r in rows if r.split()[0] == "hello"), None)
    assert row is not None and row[1:3] == ["1,stable", "1"], listed.stdout
    # And kubectl, by its short name.
    assert "hello" in server.kubectl("get", "art", "-n", "dev").stdout

    # The blob endpoint gives back exactly the file's bytes.
    blob = server.api("GET", f"{ARTIFACTS.format('default')}/hello/blobs/{digest}")
    assert blob.status_code == 200 and blob.headers["Content-Type"] == "application/wasm", blob.text[:200]
    assert blob.content == data

    # A pod names it by tag or by digest.
    for name, image in (("by-tag", "hello:stable"), ("by-digest", f"hello@{digest}")):
        r = server.api("POST", "/api/v1/namespaces/default/pods", json=pod_manifest(name, image=image))
        assert r.status_code == 201, r.text


def test_kapsel_push_refuses_what_is_not_a_component(server, tmp_path):
    core = tmp_path / "core.wasm"
    core.write_bytes(b"\0asm\x01\0\0\0" + bytes(64))
    refused = server.kapsel("push", str(core), "core:1")
    assert refused.returncode != 0
    assert "core WebAssembly module" in refused.stderr and "wasm32-wasip2" in refused.stderr, refused.stderr
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hello\n")
    refused = server.kapsel("push", str(script), "script:1")
    assert refused.returncode != 0 and "not a WebAssembly component" in refused.stderr, refused.stderr
    missing = server.kapsel("push", str(tmp_path / "absent.wasm"), "absent:1")
    assert missing.returncode != 0 and "absent.wasm" in missing.stderr, missing.stderr
    malformed = server.kapsel("push", str(workload("hello")), "registry.example/hello:1")
    assert malformed.returncode != 0 and "registry.example/hello:1" in malformed.stderr, malformed.stderr
    for name in ("core", "script", "absent"):
        assert server.api("GET", f"{ARTIFACTS.format('default')}/{name}").status_code == 404

    # A tenant who only views a namespace cannot push into it; one who edits can.
    assert server.api("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": "qa"}}).status_code == 201
    made = server.kapsel("token", "create", "--user", "carol", "--namespace", "qa", "--role", "view",
                         "--namespace", "default", "--role", "edit")
    assert made.returncode == 0, made.stderr
    carol = ["--server", server.url, "--token", made.stdout.strip(), "--certificate-authority", str(server.ca)]
    denied = server.kapsel("push", str(workload("hello")), "mine:1", "-n", "qa", connection=carol)
    assert denied.returncode != 0 and "carol" in denied.stderr and "qa" in denied.stderr, denied.stderr
    assert server.api("GET", f"{ARTIFACTS.format('qa')}/mine").status_code == 404
    allowed = server.kapsel("push", str(workload("hello")), "mine:1", connection=carol)
    assert allowed.returncode == 0, allowed.stderr


def test_a_pod_naming_an_unpushed_image_is_refused_with_what_to_push(server):
    hint = "image \"nope:1\" not found in namespace \"default\": push it with `kapsel push FILE nope:1 -n default`"

    # kubectl prints the server's 422.
    created = server.kubectl("run", "web", "--image=nope:1", "--restart=Never")
    assert created.returncode != 0
    assert 'Pod "web" is invalid' in created.stderr and "spec.containers[0].image" in created.stderr, created.stderr
    assert hint in created.stderr.replace('\\"', '"'), created.stderr

    # So does the kapsel CLI.
    manifest = f"apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec: {{schedulerName: {UNPLACED}, containers: [{{name: main, image: nope:1}}]}}\n"
    applied = server.kapsel("apply", "-f", "-", input=manifest)
    assert applied.returncode != 0 and hint in applied.stderr, applied.stderr

    # The Status over HTTP: the field, the reason, and a malformed reference told apart from a missing one.
    status = assert_status(server.api("POST", "/api/v1/namespaces/default/pods",
                                      json=pod_manifest("web", image="nope:1")), 422, "Invalid")
    assert status["details"]["causes"] == [
        {"field": "spec.containers[0].image", "reason": "FieldValueNotFound", "message": hint}], status
    status = assert_status(server.api("POST", "/api/v1/namespaces/default/pods",
                                      json=pod_manifest("web", image="registry.example/app:1")), 422, "Invalid")
    assert [(c["field"], c["reason"]) for c in status["details"]["causes"]] == [
        ("spec.containers[0].image", "FieldValueInvalid")], status
    assert server.api("GET", "/api/v1/namespaces/default/pods/web").status_code == 404

    # Once pushed, the same command creates the pod, and the local node runs it to its end.
    pushed = server.kapsel("push", str(workload("hello")), "nope:1")
    assert pushed.returncode == 0, pushed.stderr
    created = server.kubectl("run", "web", "--image=nope:1", "--restart=Never")
    assert created.returncode == 0 and "pod/web created" in created.stdout, created.stdout + created.stderr
    deadline = time.monotonic() + 60
    phase = None
    while time.monotonic() < deadline:
        phase = server.api("GET", "/api/v1/namespaces/default/pods/web").json().get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(0.25)
    assert phase == "Succeeded", server.api("GET", "/api/v1/namespaces/default/pods/web").text
    logs = server.kubectl("logs", "web")
    assert logs.returncode == 0 and "Hello from Kapsel" in logs.stdout, logs.stdout + logs.stderr
