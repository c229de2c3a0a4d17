"""The official Kubernetes Python client against `kapsel serve`, configured by
nothing but the kubeconfig the server writes."""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kapsel_e2e import UNPLACED, push_images


class CoreV1(client.CoreV1Api):
    """The client's core API, knowing the server it talks to (to push images)."""

    def __init__(self, api_client, server):
        super().__init__(api_client)
        self.server = server


@pytest.fixture
def v1(server):
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(server.kubeconfig), client_configuration=configuration)
    api_client = client.ApiClient(configuration)
    yield CoreV1(api_client, server)
    api_client.close()


def new_namespace(v1, name="dev"):
    """A namespace made with the client, with the standard images pushed into it."""
    made = v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    push_images(v1.server, name)
    return made


def new_pod(name, labels=None, image="app:1", containers=None):
    # Not placed by the scheduler (see kapsel_e2e.UNPLACED): the tests see only their own writes.
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(containers=containers or [client.V1Container(name="main", image=image)],
                              scheduler_name=UNPLACED),
    )


def error_body(e: ApiException) -> dict:
    return json.loads(e.body)


def test_create_and_list_with_label_selector(v1):
    ns = new_namespace(v1)
    assert ns.metadata.name == "dev" and ns.status.phase == "Active"
    created = v1.create_namespaced_pod("dev", new_pod("web-1", {"app": "web", "tier": "fe"}))
    assert created.metadata.uid and created.metadata.resource_version
    assert created.metadata.namespace == "dev"
    v1.create_namespaced_pod("dev", new_pod("web-2", {"app": "web", "tier": "be"}))
    v1.create_namespaced_pod("dev", new_pod("db", {"app": "db"}))

    every = v1.list_namespaced_pod("dev")
    assert sorted(p.metadata.name for p in every.items) == ["db", "web-1", "web-2"]
    assert int(every.metadata.resource_version) >= int(created.metadata.resource_version)
    web = v1.list_namespaced_pod("dev", label_selector="app=web")
    assert sorted(p.metadata.name for p in web.items) == ["web-1", "web-2"]
    fe = v1.list_namespaced_pod("dev", label_selector="app=web,tier=fe")
    assert [p.metadata.name for p in fe.items] == ["web-1"]
    assert v1.list_namespaced_pod("dev", label_selector="app=none").items == []
    across = v1.list_pod_for_all_namespaces(label_selector="app=db")
    assert [(p.metadata.namespace, p.metadata.name) for p in across.items] == [("dev", "db")]


def test_strategic_merge_patch_keeps_other_fields(v1):
    new_namespace(v1)
    containers = [
        client.V1Container(name="main", image="app:1",
                           env=[client.V1EnvVar(name="MODE", value="production")]),
        client.V1Container(name="sidecar", image="proxy:1"),
    ]
    before = v1.create_namespaced_pod("dev", new_pod("web", {"app": "web"}, containers=containers))

    # The client sends a dict body to patch_* as a strategic merge patch.
    patched = v1.patch_namespaced_pod("web", "dev", {
        "metadata": {"labels": {"release": "canary"}},
        "spec": {"containers": [{"name": "main", "image": "app:2"}]},
    })
    assert patched.metadata.labels == {"app": "web", "release": "canary"}
    by_name = {c.name: c for c in patched.spec.containers}
    assert list(by_name) == ["main", "sidecar"], "containers are merged by name, not replaced"
    assert by_name["main"].image == "app:2"
    assert [(e.name, e.value) for e in by_name["main"].env] == [("MODE", "production")]
    assert by_name["sidecar"].image == "proxy:1"
    assert patched.metadata.uid == before.metadata.uid
    assert int(patched.metadata.resource_version) > int(before.metadata.resource_version)
    assert patched.metadata.generation == 2
    # What the response said is what is stored.
    assert v1.read_namespaced_pod("web", "dev").to_dict() == patched.to_dict()


def test_replace_with_stale_resource_version_conflicts(v1):
    new_namespace(v1)
    v1.create_namespaced_pod("dev", new_pod("web"))
    stale = v1.read_namespaced_pod("web", "dev")
    fresh = v1.read_namespaced_pod("web", "dev")
    fresh.metadata.labels = {"updated": "first"}
    v1.replace_namespaced_pod("web", "dev", fresh)

    stale.metadata.labels = {"updated": "second"}
    with pytest.raises(ApiException) as raised:
        v1.replace_namespaced_pod("web", "dev", stale)
    assert raised.value.status == 409
    body = error_body(raised.value)
    assert body["kind"] == "Status" and body["reason"] == "Conflict"
    assert body["details"]["name"] == "web"
    assert v1.read_namespaced_pod("web", "dev").metadata.labels == {"updated": "first"}


def test_watch_sees_added_modified_deleted(v1):
    new_namespace(v1)
    v1.create_namespaced_pod("dev", new_pod("before"))
    since = v1.list_namespaced_pod("dev").metadata.resource_version
    events: queue.Queue = queue.Queue()

    def writer():
        time.sleep(0.3)
        v1.create_namespaced_pod("dev", new_pod("web"))
        v1.patch_namespaced_pod("web", "dev", {"metadata": {"labels": {"step": "two"}}})
        v1.delete_namespaced_pod("web", "dev")

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    stream = watch.Watch().stream(v1.list_namespaced_pod, "dev", resource_version=since,
                                  timeout_seconds=20)
    try:
        for event in stream:
            seen.append((event["type"], event["object"].metadata.name,
                         (event["object"].metadata.labels or {}).get("step")))
            if event["type"] == "DELETED":
                break
    finally:
        stream.close()
        thread.join()
    assert seen == [("ADDED", "web", None), ("MODIFIED", "web", "two"), ("DELETED", "web", "two")]


def test_invalid_pod_is_422_with_the_field(v1):
    new_namespace(v1)
    with pytest.raises(ApiException) as raised:
        v1.create_namespaced_pod("dev", new_pod("broken", containers=[client.V1Container(name="main")]))
    assert raised.value.status == 422
    body = error_body(raised.value)
    assert body["kind"] == "Status" and body["reason"] == "Invalid" and body["code"] == 422
    assert body["details"]["name"] == "broken" and body["details"]["kind"] == "Pod"
    fields = [c["field"] for c in body["details"]["causes"]]
    assert "spec.containers[0].image" in fields, body
    assert "spec.containers[0].image" in body["message"]
    assert v1.list_namespaced_pod("dev").items == [], "an invalid pod is not stored"


def test_missing_objects_are_404_not_found(v1):
    new_namespace(v1)
    with pytest.raises(ApiException) as raised:
        v1.read_namespaced_pod("nope", "dev")
    assert raised.value.status == 404
    body = error_body(raised.value)
    assert body["reason"] == "NotFound" and body["details"]["name"] == "nope"
    assert body["details"]["kind"] == "pods"
    assert body["message"] == 'pods "nope" not found'

    with pytest.raises(ApiException) as raised:
        v1.delete_namespaced_pod("nope", "dev")
    assert raised.value.status == 404 and error_body(raised.value)["reason"] == "NotFound"

    # Creating in a namespace that does not exist is a NotFound for the namespace.
    with pytest.raises(ApiException) as raised:
        v1.create_namespaced_pod("nowhere", new_pod("web"))
    assert raised.value.status == 404
    body = error_body(raised.value)
    assert body["reason"] == "NotFound" and body["details"]["name"] == "nowhere"
    assert body["details"]["kind"] == "namespaces"
