"""The HTTP API itself, over raw HTTPS: body formats, error Statuses, watch
resumption and compaction, generateName, discovery."""

from __future__ import annotations

import json
import time

import pytest
import requests

from kapsel_e2e import assert_status, create_namespace, create_pod, create_token, pod_manifest

PODS = "/api/v1/namespaces/default/pods"


def watch_events(response: requests.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def test_yaml_body_create(server):
    body = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: from-yaml\n  labels: {format: yaml}\n"
            "spec:\n  schedulerName: e2e-unplaced\n  containers:\n  - name: main\n    image: app:1\n"
            "    args: [\"--port\", \"8080\"]\n")
    r = server.api("POST", PODS, data=body.encode(), headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    pod = r.json()
    assert pod["metadata"]["name"] == "from-yaml" and pod["metadata"]["namespace"] == "default"
    assert pod["spec"]["containers"][0]["args"] == ["--port", "8080"]
    assert pod["metadata"]["labels"] == {"format": "yaml"}
    assert server.api("GET", f"{PODS}/from-yaml").json() == pod
    # Broken YAML is a 400 too.
    r = server.api("POST", PODS, data=b"metadata: [unclosed", headers={"Content-Type": "application/yaml"})
    assert_status(r, 400, "BadRequest")


def test_malformed_json_is_400(server):
    r = server.api("POST", PODS, data=b'{"apiVersion": "v1", "kind": "Pod", "metadata": {',
                   headers={"Content-Type": "application/json"})
    status = assert_status(r, 400, "BadRequest")
    assert "JSON" in status["message"]
    assert_status(server.api("POST", PODS, data=b"[1, 2]", headers={"Content-Type": "application/json"}),
                  400, "BadRequest")
    assert_status(server.api("POST", PODS, data=b"", headers={"Content-Type": "application/json"}),
                  400, "BadRequest")
    # A well-formed body of the wrong kind for the URL.
    r = server.api("POST", PODS, json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    assert_status(r, 400, "BadRequest")
    # A body namespace other than the URL's.
    r = server.api("POST", PODS, json=pod_manifest("x", namespace="elsewhere"))
    assert_status(r, 400, "BadRequest")
    assert server.api("GET", PODS).json()["items"] == []


def test_body_over_3_mib_is_413(server):
    big = pod_manifest("huge")
    big["metadata"]["annotations"] = {"blob": "x" * (3 * 1024 * 1024 + 1024)}
    r = server.api("POST", PODS, json=big)
    status = assert_status(r, 413, "RequestEntityTooLarge")
    assert str(3 * 1024 * 1024) in status["message"]
    assert server.api("GET", f"{PODS}/huge").status_code == 404
    # Just under the limit is read (and then judged on its merits: annotations over 256 KiB).
    under = pod_manifest("under")
    under["metadata"]["annotations"] = {"blob": "x" * (2 * 1024 * 1024)}
    r = server.api("POST", PODS, json=under)
    status = assert_status(r, 422, "Invalid")
    assert [c["field"] for c in status["details"]["causes"]] == ["metadata.annotations"]
    # The server still serves after refusing.
    assert server.api("GET", PODS).status_code == 200


def test_a_refused_request_with_a_big_body_gets_its_status(server):
    """A request refused before its body is read (here: a tenant without rights in the
    namespace) still gets the Status, not a connection closed while it was sending."""
    tenant = create_token(server, "nobody", {})
    big = json.dumps({"metadata": {"annotations": {"x": "y" * 2_000_000}}}).encode()
    for method in ("PATCH", "POST", "PUT"):
        path = PODS if method == "POST" else f"{PODS}/p"
        r = server.api(method, path, token=tenant, data=big,
                       headers={"Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"})
        assert_status(r, 403, "Forbidden")


def test_unknown_fields_follow_field_validation(server):
    """fieldValidation=Strict refuses a misspelt field (kubectl's default); without it
    (Warn) the create succeeds with a Warning and, as in Kubernetes, the field is dropped."""
    typo = pod_manifest("typo")
    typo["spec"]["containers"][0]["imagee"] = "app:2"
    r = server.api("POST", f"{PODS}?fieldValidation=Strict", json=typo)
    status = assert_status(r, 400, "BadRequest")
    assert 'spec.containers[0].imagee' in status["message"]
    assert server.api("GET", f"{PODS}/typo").status_code == 404

    r = server.api("POST", PODS, json=typo)
    assert r.status_code == 201, r.text
    assert "spec.containers[0].imagee" in r.headers.get("Warning", ""), r.headers
    stored = server.api("GET", f"{PODS}/typo").json()
    assert stored["spec"]["containers"][0] == {"name": "main", "image": "app:1"}, \
        "unknown fields are dropped, not stored"
    assert_status(server.api("POST", f"{PODS}?fieldValidation=Sometimes", json=pod_manifest("x")),
                  400, "BadRequest")


def test_unsupported_media_type_and_unknown_paths(server):
    r = server.api("POST", PODS, data=b"<pod/>", headers={"Content-Type": "application/xml"})
    assert_status(r, 415, "UnsupportedMediaType")
    assert_status(server.api("GET", "/api/v1/widgets"), 404, "NotFound")
    assert_status(server.api("GET", "/nope"), 404, "NotFound")
    assert_status(server.api("PUT", PODS, json=pod_manifest("x")), 405, "MethodNotAllowed")


def test_watch_resumes_from_a_recent_resource_version(server):
    create_namespace(server, "dev")
    create_pod(server, "dev", "old")
    since = server.api("GET", "/api/v1/namespaces/dev/pods").json()["metadata"]["resourceVersion"]
    create_pod(server, "dev", "new")
    r = server.api("PATCH", "/api/v1/namespaces/dev/pods/old", json={"metadata": {"labels": {"x": "y"}}},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert server.api("DELETE", "/api/v1/namespaces/dev/pods/new").status_code == 200
    r = server.api("GET", f"/api/v1/namespaces/dev/pods?watch=true&resourceVersion={since}&timeoutSeconds=1")
    assert r.status_code == 200, r.text
    events = watch_events(r)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "new"), ("MODIFIED", "old"), ("DELETED", "new")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[0] > int(since)
    # Without a resourceVersion, a watch starts with the current objects.
    r = server.api("GET", "/api/v1/namespaces/dev/pods?watch=1&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in watch_events(r)] == [("ADDED", "old")]
    assert_status(server.api("GET", f"{PODS}?watch=1&resourceVersion=abc"), 400, "BadRequest")


@pytest.mark.needs_compaction
def test_watch_from_a_compacted_resource_version_is_410(compacting_server):
    """The server runs with --retained-changes 5; after >20 writes and one compaction
    period (60 s, in the background), the first revision is gone."""
    server = compacting_server.server
    old = compacting_server.old_revision
    deadline = compacting_server.started_at + 100
    while True:
        r = server.api("GET", f"{PODS}?watch=1&resourceVersion={old}&timeoutSeconds=1")
        if r.status_code != 200 or any(e["type"] == "ERROR" for e in watch_events(r)):
            break
        assert time.monotonic() < deadline, \
            f"no compaction within 100 s of start: a watch from {old} still replays {watch_events(r)}"
        time.sleep(1)
    # Kubernetes answers either 410 Gone or an ERROR event carrying the 410 Status.
    if r.status_code == 200:
        [error] = [e for e in watch_events(r) if e["type"] == "ERROR"]
        status = error["object"]
        assert status["code"] == 410 and status["reason"] in ("Expired", "Gone"), status
    else:
        status = assert_status(r, 410, "Expired")
    assert old in status["message"]
    # The client's recovery: list again and watch from the list's revision.
    listing = server.api("GET", PODS).json()
    fresh = listing["metadata"]["resourceVersion"]
    create_pod(server, "default", "after-compaction")
    r = server.api("GET", f"{PODS}?watch=1&resourceVersion={fresh}&timeoutSeconds=1")
    assert r.status_code == 200, r.text
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in watch_events(r)] == [
        ("ADDED", "after-compaction")]


def test_generate_name(server):
    names = set()
    for _ in range(5):
        r = server.api("POST", PODS, json={"apiVersion": "v1", "kind": "Pod",
                                           "metadata": {"generateName": "web-"},
                                           "spec": {"containers": [{"name": "m", "image": "app:1"}]}})
        assert r.status_code == 201, r.text
        pod = r.json()
        name = pod["metadata"]["name"]
        assert name.startswith("web-") and len(name) > len("web-"), name
        assert pod["metadata"]["generateName"] == "web-"
        assert server.api("GET", f"{PODS}/{name}").status_code == 200
        names.add(name)
    assert len(names) == 5
    # Neither name nor generateName: 422 naming metadata.name.
    r = server.api("POST", PODS, json={"apiVersion": "v1", "kind": "Pod", "metadata": {},
                                       "spec": {"containers": [{"name": "m", "image": "i:1"}]}})
    status = assert_status(r, 422, "Invalid")
    assert [c["field"] for c in status["details"]["causes"]] == ["metadata.name"]
    # A create may not carry a resourceVersion; a duplicate name is 409 AlreadyExists.
    create_pod(server, "default", "fixed")
    status = assert_status(server.api("POST", PODS, json=pod_manifest("fixed")), 409, "AlreadyExists")
    assert status["details"]["name"] == "fixed"


def test_discovery(server):
    core = server.api("GET", "/api").json()
    assert core["kind"] == "APIVersions" and core["versions"] == ["v1"]
    assert core["serverAddressByClientCIDRs"][0]["serverAddress"] == f"127.0.0.1:{server.port}"

    groups = server.api("GET", "/apis").json()
    assert groups["kind"] == "APIGroupList" and groups["apiVersion"] == "v1"
    [kapsel] = [g for g in groups["groups"] if g["name"] == "kapsel.io"]
    assert kapsel["versions"] == [{"groupVersion": "kapsel.io/v1alpha1", "version": "v1alpha1"}]
    assert kapsel["preferredVersion"] == {"groupVersion": "kapsel.io/v1alpha1", "version": "v1alpha1"}
    group = server.api("GET", "/apis/kapsel.io").json()
    assert group["kind"] == "APIGroup" and group["name"] == "kapsel.io"

    v1 = server.api("GET", "/api/v1").json()
    assert v1["kind"] == "APIResourceList" and v1["groupVersion"] == "v1"
    resources = {r["name"]: r for r in v1["resources"]}
    assert {"pods", "pods/status", "namespaces", "nodes", "events", "resourcequotas", "limitranges"} <= set(resources)
    pods = resources["pods"]
    assert pods["kind"] == "Pod" and pods["namespaced"] is True and pods["singularName"] == "pod"
    assert {"create", "delete", "get", "list", "patch", "update", "watch"} <= set(pods["verbs"])
    assert "po" in pods["shortNames"]
    assert resources["namespaces"]["namespaced"] is False
    assert resources["nodes"]["namespaced"] is False

    kapsel_v1alpha1 = server.api("GET", "/apis/kapsel.io/v1alpha1").json()
    assert kapsel_v1alpha1["kind"] == "APIResourceList"
    assert kapsel_v1alpha1["groupVersion"] == "kapsel.io/v1alpha1"
    tokens = {r["name"]: r for r in kapsel_v1alpha1["resources"]}["tokens"]
    assert tokens["kind"] == "Token" and tokens["namespaced"] is False

    version = server.api("GET", "/version").json()
    assert version["major"] == "1" and version["minor"].isdigit()
    assert version["gitVersion"].startswith(f"v{version['major']}.{version['minor']}.")
    assert {"platform", "gitCommit", "buildDate", "goVersion", "compiler"} <= set(version)

    assert_status(server.api("GET", "/apis/nothing.example"), 404, "NotFound")
    assert_status(server.api("GET", "/apis/kapsel.io/v9"), 404, "NotFound")
