"""Stock kubectl against `kapsel serve`, configured by nothing but the kubeconfig
the server writes."""

from __future__ import annotations

import json
import queue
import threading
import time

import yaml

from kapsel_e2e import UNPLACED, create_namespace, create_pod, push_image, push_images

# Not placed (see kapsel_e2e.UNPLACED): the test compares what it wrote, and expects Pending.
POD_YAML = f"""\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: dev
  labels:
    app: web
spec:
  schedulerName: {UNPLACED}
  containers:
  - name: main
    image: web:1
    env:
    - name: MODE
      value: production
"""


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def create_ns(server, name: str) -> None:
    """`kubectl create ns`, then the standard images pushed into it (a pod runs only pushed images)."""
    assert f"namespace/{name} created" in ok(server.kubectl("create", "ns", name))
    push_images(server, name)


#: `kubectl run --overrides` that leaves the pod unplaced, so that it stays Pending (see kapsel_e2e.UNPLACED).
UNPLACED_OVERRIDES = f'--overrides={{"apiVersion": "v1", "spec": {{"schedulerName": "{UNPLACED}"}}}}'


def table(text: str) -> list[dict[str, str]]:
    """Parses kubectl's column output into dicts keyed by header."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    headers = lines[0].split()
    return [dict(zip(headers, line.split())) for line in lines[1:]]


def test_namespaces_and_apply_round_trip(server, tmp_path):
    names = [row["NAME"] for row in table(ok(server.kubectl("get", "ns")))]
    assert "default" in names

    create_ns(server, "dev")
    rows = {row["NAME"]: row for row in table(ok(server.kubectl("get", "ns")))}
    assert rows["dev"]["STATUS"] == "Active"

    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD_YAML)
    assert ok(server.kubectl("apply", "-f", str(manifest))).strip() == "pod/web created"
    assert ok(server.kubectl("apply", "-f", str(manifest))).strip() == "pod/web unchanged"

    manifest.write_text(POD_YAML.replace("web:1", "web:2").replace("app: web", "app: web\n    track: stable"))
    assert ok(server.kubectl("apply", "-f", str(manifest))).strip() == "pod/web configured"
    pod = json.loads(ok(server.kubectl("get", "pod", "web", "-n", "dev", "-o", "json")))
    assert pod["spec"]["containers"][0]["image"] == "web:2"
    assert pod["spec"]["containers"][0]["env"] == [{"name": "MODE", "value": "production"}]
    assert pod["metadata"]["labels"] == {"app": "web", "track": "stable"}
    assert pod["metadata"]["generation"] == 2
    # Applying what is stored changes nothing.
    assert ok(server.kubectl("apply", "-f", str(manifest))).strip() == "pod/web unchanged"

    out = ok(server.kubectl("get", "pods", "-n", "dev"))
    header = out.splitlines()[0]
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    [row] = table(out)
    assert row["NAME"] == "web" and row["READY"] == "0/1" and row["STATUS"] == "Pending"
    assert row["RESTARTS"] == "0"

    # -o yaml parses back into the same object.
    as_yaml = yaml.safe_load(ok(server.kubectl("get", "pod", "web", "-n", "dev", "-o", "yaml")))
    assert as_yaml["metadata"]["uid"] == pod["metadata"]["uid"]

    assert ok(server.kubectl("delete", "-f", str(manifest))).startswith('pod "web" deleted')
    result = server.kubectl("get", "pods", "-n", "dev")
    assert result.returncode == 0
    assert "No resources found in dev namespace." in result.stderr
    assert server.api("GET", "/api/v1/namespaces/dev/pods/web").status_code == 404


def test_watch_sees_a_pod_created_later(server):
    create_namespace(server, "dev")
    create_pod(server, "dev", "first")
    watcher = server.kubectl_popen("get", "pods", "-n", "dev", "-w")
    lines: queue.Queue[str] = queue.Queue()

    def pump():
        for line in watcher.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()

    def wait_for(word: str, timeout: float = 15.0) -> list[str]:
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(line)
            if line.split() and line.split()[0] == word:
                return seen
        raise AssertionError(f"kubectl -w did not print {word!r} within {timeout}s; printed {seen!r}")

    try:
        first = wait_for("first")
        assert first[0].split()[:2] == ["NAME", "READY"]  # the watch is established
        ok(server.kubectl("run", "late", "--image=app:2", "-n", "dev"))
        [line] = wait_for("late")[-1:]
        assert line.split()[:3] == ["late", "0/1", "Pending"]
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)


def test_labels_and_selectors(server):
    create_ns(server, "dev")
    for name in ("a", "b", "c"):
        ok(server.kubectl("run", name, "--image=app:1", "-n", "dev"))
    assert ok(server.kubectl("label", "pod", "a", "tier=frontend", "-n", "dev")).strip() == "pod/a labeled"
    ok(server.kubectl("label", "pod", "b", "tier=backend", "-n", "dev"))

    def names(*selector):
        return sorted(r["NAME"] for r in table(ok(server.kubectl("get", "pods", "-n", "dev", *selector))))

    assert names("-l", "tier=frontend") == ["a"]
    assert names("-l", "tier") == ["a", "b"]
    assert names("-l", "tier!=frontend") == ["b", "c"]
    assert names("-l", "tier in (frontend,backend)") == ["a", "b"]
    # Overwriting a label needs --overwrite, as in Kubernetes.
    refused = server.kubectl("label", "pod", "a", "tier=backend", "-n", "dev")
    assert refused.returncode != 0
    ok(server.kubectl("label", "pod", "a", "tier=backend", "--overwrite", "-n", "dev"))
    assert names("-l", "tier=backend") == ["a", "b"]
    ok(server.kubectl("label", "pod", "a", "tier-", "-n", "dev"))
    assert names("-l", "!tier") == ["a", "c"]


def test_api_resources_lists_core_kinds_and_tokens(server):
    out = ok(server.kubectl("api-resources"))
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert {"pods", "namespaces", "nodes", "events", "resourcequotas", "limitranges", "tokens"} <= set(rows)
    assert "kapsel.io/v1alpha1" in rows["tokens"]
    assert rows["pods"].split()[1] == "po"
    # Namespaced column: pods true, tokens false.
    assert "true" in rows["pods"].split() and "false" in rows["tokens"].split()


def test_get_missing_pod_fails_with_not_found(server):
    result = server.kubectl("get", "pod", "missing")
    assert result.returncode != 0
    assert 'Error from server (NotFound): pods "missing" not found' in result.stderr, result.stderr


def test_deleting_a_namespace_deletes_its_pods(server):
    create_ns(server, "dev")
    create_ns(server, "keep")
    ok(server.kubectl("run", "one", "--image=app:1", "-n", "dev"))
    ok(server.kubectl("run", "two", "--image=app:1", "-n", "dev"))
    ok(server.kubectl("run", "other", "--image=app:1", "-n", "keep"))

    assert 'namespace "dev" deleted' in ok(server.kubectl("delete", "ns", "dev"))
    # Every way of looking shows the pods gone, and only those of dev.
    gone = server.kubectl("get", "pods", "-n", "dev")
    assert gone.returncode == 0 and gone.stdout == "", gone.stdout
    everywhere = table(ok(server.kubectl("get", "pods", "-A")))
    assert [(r["NAMESPACE"], r["NAME"]) for r in everywhere] == [("keep", "other")]
    assert server.kubectl("get", "ns", "dev").returncode != 0
    # A namespace of the same name starts empty.
    ok(server.kubectl("create", "ns", "dev"))
    assert server.api("GET", "/api/v1/namespaces/dev/pods").json()["items"] == []


def test_new_pods_are_pending_and_selectable_by_phase(server):
    """As in Kubernetes, the API server gives a new pod `status.phase: Pending`,
    so that `--field-selector status.phase=Pending` finds the pods the table shows as Pending."""
    create_ns(server, "dev")
    ok(server.kubectl("run", "waiting", "--image=app:1", UNPLACED_OVERRIDES, "-n", "dev"))
    assert ok(server.kubectl("get", "pod", "waiting", "-n", "dev", "-o", "jsonpath={.status.phase}")) == "Pending"
    rows = table(ok(server.kubectl("get", "pods", "-n", "dev", "--field-selector", "status.phase=Pending")))
    assert [r["NAME"] for r in rows] == ["waiting"]
    assert table(ok(server.kubectl("get", "pods", "-n", "dev", "--field-selector", "status.phase=Running"))) == []


def test_delete_f_of_a_namespace_with_its_pods(server, tmp_path):
    """`kubectl delete -f` of the manifest that made a namespace and its pods succeeds,
    as in Kubernetes (where deleting the namespace leaves the pods deletable until it is gone)."""
    namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
    manifest = tmp_path / "shop.yaml"
    manifest.write_text(
        namespace + "---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: cart, namespace: shop}\n"
        "spec: {containers: [{name: main, image: cart:1}]}\n")
    # The pod's image is pushed into its namespace, so the namespace comes first.
    assert ok(server.kubectl("apply", "-f", "-", input=namespace)).splitlines() == ["namespace/shop created"]
    push_image(server, "shop", "cart:1")
    assert ok(server.kubectl("apply", "-f", str(manifest))).splitlines() == [
        "namespace/shop unchanged", "pod/cart created"]
    result = server.kubectl("delete", "-f", str(manifest))
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    deadline = time.monotonic() + 10
    while server.api("GET", "/api/v1/namespaces/shop").status_code != 404:
        assert time.monotonic() < deadline, "the namespace was not removed"
        time.sleep(0.2)
    assert server.api("GET", "/api/v1/pods").json()["items"] == []
