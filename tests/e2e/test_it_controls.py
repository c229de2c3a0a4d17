"""IT's controls end to end, as the README tour uses them: IT applies
examples/it-controls.yaml (resource classes, a cluster workload template,
a namespace restricted to small classes, a quota and a limit range); a
tenant pushes the image with `kapsel push` and makes pods from the template
with the kapsel CLI; the quota's usage
is exact after 32 concurrent creates over HTTPS, and `kapsel describe
namespace` and `kubectl describe quota` show it.
"""

from __future__ import annotations

import concurrent.futures

from kapsel_e2e import REPO, assert_status, pod_manifest, push_images, workload

EXAMPLE = REPO / "examples" / "it-controls.yaml"


def tenant(server) -> list[str]:
    made = server.kapsel("token", "create", "--user", "bob", "--namespace", "shop", "--role", "edit")
    assert made.returncode == 0, made.stderr
    return ["--server", server.url, "--token", made.stdout.strip(), "--certificate-authority", str(server.ca)]


def test_a_tenant_makes_pods_from_it_templates_within_classes_and_quota(server):
    applied = server.kapsel("apply", "-f", str(EXAMPLE))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    bob = tenant(server)

    classes = server.kapsel("get", "resourceclasses", connection=bob)
    assert classes.returncode == 0, classes.stderr
    assert "guaranteed-small" in classes.stdout and "1 / 1" in classes.stdout, classes.stdout

    # As the README's tour: the tenant pushes the component the template's pods run.
    pushed = server.kapsel("push", str(workload("hello")), "web:2", "-n", "shop", connection=bob)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert pushed.stdout.startswith("pushed web:2 to namespace shop (sha256:"), pushed.stdout

    made = server.kapsel("create", "from-template", "web", "-n", "shop", "--set", "image=web:2",
                         "--set", "class=guaranteed-small", "--name", "web-1", connection=bob)
    assert made.returncode == 0, made.stdout + made.stderr
    assert made.stdout.strip() == "pod/web-1 created", made.stdout
    pod = server.api("GET", "/api/v1/namespaces/shop/pods/web-1").json()
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}, pod
    assert pod["spec"]["containers"][0]["env"] == [{"name": "LOG_LEVEL", "value": "info"}], pod
    assert pod["metadata"]["labels"] == {"app": "web", "managed-by": "template"}, pod

    refused = server.kapsel("create", "from-template", "web", "-n", "shop", "--set", "image=web:2",
                            "--set", "class=guaranteed-large", connection=bob)
    assert refused.returncode != 0
    assert 'resource class "guaranteed-large" is not allowed in namespace "shop"' in refused.stderr, refused.stderr
    missing = server.kapsel("create", "from-template", "web", "-n", "shop", connection=bob)
    assert missing.returncode != 0 and "parameters.image" in missing.stderr and "--set image=" in missing.stderr, missing.stderr
    unknown = server.kapsel("create", "from-template", "api", "-n", "shop", "--set", "image=x", connection=bob)
    assert unknown.returncode != 0 and 'no workload template "api"' in unknown.stderr, unknown.stderr

    described = server.kapsel("describe", "namespace", "shop")
    assert described.returncode == 0, described.stderr
    lines = [" ".join(line.split()) for line in described.stdout.splitlines()]
    assert "requests.cpu 1 4" in lines and "pods 1 10" in lines and "limits.memory 1Gi 8Gi" in lines, described.stdout

    kubectl = server.kubectl("describe", "quota", "compute", "-n", "shop")
    assert kubectl.returncode == 0, kubectl.stderr
    assert any(line.split()[:3] == ["pods", "1", "10"] for line in kubectl.stdout.splitlines() if line.strip()), kubectl.stdout


def test_quota_usage_stays_exact_under_32_concurrent_clients(server):
    assert server.api("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": "race"}}).status_code == 201
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "pods"},
             "spec": {"hard": {"pods": "25", "requests.memory": "2Gi"}}}
    assert server.api("POST", "/api/v1/namespaces/race/resourcequotas", json=quota).status_code == 201
    push_images(server, "race")

    def create(i: int) -> int:
        pod = pod_manifest(f"p{i}")
        pod["spec"]["containers"][0]["resources"] = {"requests": {"memory": "64Mi"}}
        return server.api("POST", "/api/v1/namespaces/race/pods", json=pod).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        codes = list(pool.map(create, range(64)))
    assert codes.count(201) == 25 and codes.count(403) == 39, codes

    def delete(i: int) -> int:
        return server.api("DELETE", f"/api/v1/namespaces/race/pods/p{i}").status_code

    existing = [item["metadata"]["name"] for item in server.api("GET", "/api/v1/namespaces/race/pods").json()["items"]]
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        deletes = pool.map(delete, [int(name[1:]) for name in existing[:10]])
        creates = pool.map(create, range(100, 132))
        assert set(deletes) == {200}
        list(creates)
    pods = server.api("GET", "/api/v1/namespaces/race/pods").json()["items"]
    used = server.api("GET", "/api/v1/namespaces/race/resourcequotas/pods").json()["status"]["used"]
    assert len(pods) <= 25
    assert used == {"pods": str(len(pods)), "requests.memory": f"{64 * len(pods)}Mi"} or \
        used == {"pods": str(len(pods)), "requests.memory": f"{len(pods) // 16}Gi"}, (used, len(pods))

    over = pod_manifest("huge")
    over["spec"]["containers"][0]["resources"] = {"requests": {"memory": "4Gi"}}
    status = assert_status(server.api("POST", "/api/v1/namespaces/race/pods", json=over), 403, "Forbidden")
    assert status["message"].startswith('pods "huge" is forbidden: exceeded quota: pods, requested: '), status
    assert "requests.memory=4Gi" in status["message"] and "limited: " in status["message"], status


def test_two_supervisors_on_one_postgresql_share_a_quota_exactly(start_server, postgres_url):
    """Quota charges from two supervisor processes on the same PostgreSQL are
    ordered by the store's writer: 64 creates split across both never
    over-admit a quota of 20."""
    first = start_server("first", datastore=postgres_url)
    second = start_server("second", datastore=postgres_url)
    assert first.api("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": "shared"}}).status_code == 201
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "pods"}, "spec": {"hard": {"pods": "20"}}}
    assert first.api("POST", "/api/v1/namespaces/shared/resourcequotas", json=quota).status_code == 201
    push_images(first, "shared")

    def create(i: int) -> int:
        server = first if i % 2 else second
        return server.api("POST", "/api/v1/namespaces/shared/pods", json=pod_manifest(f"p{i}")).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        codes = list(pool.map(create, range(64)))
    assert codes.count(201) == 20 and codes.count(403) == 44, codes
    for server in (first, second):
        used = server.api("GET", "/api/v1/namespaces/shared/resourcequotas/pods").json()["status"]["used"]
        assert used == {"pods": "20"}, used
    assert len(second.api("GET", "/api/v1/namespaces/shared/pods").json()["items"]) == 20
