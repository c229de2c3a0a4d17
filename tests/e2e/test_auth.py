"""Authentication (bearer tokens) and tenant authorization, end to end."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from kapsel_e2e import assert_status, create_namespace, create_pod


def test_requests_without_a_valid_token_are_401(server):
    for path in ("/api/v1/namespaces", "/api", "/version", "/api/v1/namespaces/default/pods"):
        status = assert_status(server.api("GET", path, token=None), 401, "Unauthorized")
        assert "token" in status["message"].lower()
    assert_status(server.api("GET", "/api/v1/namespaces", token="kpl_not-a-real-token"), 401, "Unauthorized")
    assert_status(server.api("POST", "/api/v1/namespaces", token="kpl_not-a-real-token",
                             json={"metadata": {"name": "x"}}), 401, "Unauthorized")
    assert server.api("GET", "/api/v1/namespaces/x", token="admin").status_code == 404
    r = server.api("GET", "/api/v1/namespaces", headers={"Authorization": f"Basic {server.token}"}, token=None)
    assert_status(r, 401, "Unauthorized")
    # Health checks need no token.
    for path in ("/healthz", "/readyz", "/livez"):
        assert server.api("GET", path, token=None).status_code == 200


@pytest.fixture
def tenants(server):
    """Namespaces dev, qa and prod with a pod each, and alice: edit in dev, view in qa."""
    for ns in ("dev", "qa", "prod"):
        create_namespace(server, ns)
        create_pod(server, ns, f"{ns}-pod")
    result = server.kapsel("token", "create", "--user", "alice",
                           "--namespace", "dev", "--role", "edit",
                           "--namespace", "qa", "--role", "view")
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("kpl_") and "\n" not in secret, result.stdout
    assert "alice" in result.stderr
    return secret


def as_alice(server, secret):
    return ["--server", server.url, "--token", secret, "--certificate-authority", str(server.ca)]


def test_tenant_roles(server, tenants, tmp_path):
    alice = tenants
    cli = as_alice(server, alice)

    # edit in dev: create, read, update, delete pods.
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: alices, namespace: dev}\n"
                        "spec: {containers: [{name: main, image: app:1}]}\n")
    result = server.kapsel("apply", "-f", str(manifest), connection=cli)
    assert result.returncode == 0 and result.stdout.strip() == "pod/alices created", result.stderr
    assert create_pod(server, "dev", "via-api", token=alice)["metadata"]["namespace"] == "dev"
    r = server.api("PATCH", "/api/v1/namespaces/dev/pods/via-api", token=alice,
                   headers={"Content-Type": "application/merge-patch+json"},
                   json={"metadata": {"labels": {"by": "alice"}}})
    assert r.status_code == 200, r.text
    assert server.api("DELETE", "/api/v1/namespaces/dev/pods/via-api", token=alice).status_code == 200

    # view in qa: read, but not create.
    assert server.api("GET", "/api/v1/namespaces/qa/pods/qa-pod", token=alice).status_code == 200
    status = assert_status(server.api("POST", "/api/v1/namespaces/qa/pods", token=alice,
                                      json={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                                            "spec": {"containers": [{"name": "m", "image": "i"}]}}),
                           403, "Forbidden")
    for word in ("alice", "create", "pods", "qa"):
        assert word in status["message"], status["message"]
    assert_status(server.api("DELETE", "/api/v1/namespaces/qa/pods/qa-pod", token=alice), 403, "Forbidden")
    manifest.write_text(manifest.read_text().replace("namespace: dev", "namespace: qa"))
    result = server.kapsel("apply", "-f", str(manifest), connection=cli)
    assert result.returncode != 0
    for word in ("alice", "create", "pods", "qa"):
        assert word in result.stderr, result.stderr

    # nothing in prod, not even reading.
    for path in ("/api/v1/namespaces/prod/pods", "/api/v1/namespaces/prod/pods/prod-pod",
                 "/api/v1/namespaces/prod"):
        status = assert_status(server.api("GET", path, token=alice), 403, "Forbidden")
        assert "alice" in status["message"] and "prod" in status["message"]
    result = server.kapsel("get", "pods", "-n", "prod", connection=cli)
    assert result.returncode != 0 and "alice" in result.stderr and "prod" in result.stderr
    assert "Forbidden" not in result.stdout

    # nor watching it.
    assert_status(server.api("GET", "/api/v1/namespaces/prod/pods?watch=1&timeoutSeconds=1", token=alice),
                  403, "Forbidden")

    # kubectl with a kubeconfig for alice says the same.
    kubeconfig = yaml.safe_load(server.kubeconfig.read_text())
    kubeconfig["users"][0]["user"]["token"] = alice
    alice_config = tmp_path / "alice.kubeconfig"
    alice_config.write_text(yaml.safe_dump(kubeconfig))
    result = server.kubectl("get", "pods", "-n", "prod", kubeconfig=alice_config)
    assert result.returncode != 0
    assert "Error from server (Forbidden)" in result.stderr and '"alice"' in result.stderr, result.stderr
    result = server.kubectl("get", "pods", "-n", "dev", kubeconfig=alice_config)
    assert result.returncode == 0 and "dev-pod" in result.stdout, result.stderr

    # quotas and limit ranges: readable by tenants, not writable.
    r = server.api("GET", "/api/v1/namespaces/dev/resourcequotas", token=alice)
    assert r.status_code == 200, r.text
    assert_status(server.api("POST", "/api/v1/namespaces/dev/resourcequotas", token=alice,
                             json={"metadata": {"name": "q"}, "spec": {"hard": {"pods": "10"}}}),
                  403, "Forbidden")
    # tenants cannot make namespaces.
    assert_status(server.api("POST", "/api/v1/namespaces", token=alice, json={"metadata": {"name": "mine"}}),
                  403, "Forbidden")


def test_lists_across_namespaces_are_filtered(server, tenants):
    alice = tenants
    r = server.api("GET", "/api/v1/pods", token=alice)
    assert r.status_code == 200, r.text
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in r.json()["items"]) == [
        ("dev", "dev-pod"), ("qa", "qa-pod")]
    result = server.kapsel("get", "pods", "-A", connection=as_alice(server, alice))
    assert result.returncode == 0, result.stderr
    rows = [line.split()[:2] for line in result.stdout.splitlines()[1:]]
    assert sorted(rows) == [["dev", "dev-pod"], ["qa", "qa-pod"]]
    # The admin sees everything.
    admin = server.api("GET", "/api/v1/pods").json()["items"]
    assert len(admin) == 3
    # A watch across namespaces is filtered the same way.
    r = server.api("GET", "/api/v1/pods?watch=1&timeoutSeconds=1", token=alice)
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    assert sorted((e["type"], e["object"]["metadata"]["namespace"]) for e in events) == [
        ("ADDED", "dev"), ("ADDED", "qa")]
    # Namespaces: alice sees her own.
    names = sorted(n["metadata"]["name"] for n in server.api("GET", "/api/v1/namespaces", token=alice).json()["items"])
    assert names == ["dev", "qa"]


def test_tokens_are_for_admins_and_revocable(server, tenants):
    alice = tenants
    assert_status(server.api("GET", "/apis/kapsel.io/v1alpha1/tokens", token=alice), 403, "Forbidden")
    result = server.kapsel("token", "list", connection=as_alice(server, alice))
    assert result.returncode != 0 and "alice" in result.stderr and "tokens" in result.stderr
    result = server.kapsel("token", "create", "--user", "mallory", "--admin", connection=as_alice(server, alice))
    assert result.returncode != 0 and "Forbidden" not in result.stdout

    listing = server.kapsel("token", "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["NAME", "USER", "ADMIN", "ROLES", "NODE", "AGE"]
    # The embedded node agent's token: a node token, neither admin nor tenant.
    assert any(line.split()[1].startswith("system:node:") and line.split()[2] == "false" for line in lines[1:]), lines
    [row] = [line.split() for line in lines[1:] if line.split()[1] == "alice"]
    name = row[0]
    assert row[2] == "false" and row[3] == "dev:edit,qa:view"
    assert any(line.split()[1:3] == ["admin", "true"] for line in lines[1:])
    # Secrets are never listed; only their hashes are stored.
    tokens = server.api("GET", "/apis/kapsel.io/v1alpha1/tokens")
    assert alice not in tokens.text and server.token not in tokens.text
    assert alice not in server.api("GET", f"/apis/kapsel.io/v1alpha1/tokens/{name}").text

    assert server.api("GET", "/api/v1/namespaces/dev/pods", token=alice).status_code == 200
    result = server.kapsel("token", "revoke", name)
    assert result.returncode == 0 and name in result.stdout, result.stderr
    # The very next request with the revoked token is refused.
    status = assert_status(server.api("GET", "/api/v1/namespaces/dev/pods", token=alice), 401, "Unauthorized")
    assert "revoked" in status["message"] or "not valid" in status["message"]
    names = [line.split()[0] for line in server.kapsel("token", "list").stdout.splitlines()[1:]]
    assert name not in names


def test_revocation_survives_a_restart(server, tenants):
    alice = tenants
    names = [line.split() for line in server.kapsel("token", "list").stdout.splitlines()[1:]]
    [name] = [n[0] for n in names if n[1] == "alice"]
    assert server.kapsel("token", "revoke", name).returncode == 0
    server.stop()
    server.start()
    assert_status(server.api("GET", "/api/v1/namespaces/dev/pods", token=alice), 401, "Unauthorized")
    assert server.api("GET", "/api/v1/namespaces/dev/pods").status_code == 200, "the admin token still works"


def test_the_database_holds_no_token_secret(server, tenants):
    alice = tenants
    # Some traffic, so that the secrets have been used.
    assert server.api("GET", "/api/v1/pods", token=alice).status_code == 200
    files = [server.data_dir / n for n in ("kapsel.db", "kapsel.db-wal")]
    assert files[0].exists()
    blob = b"".join(f.read_bytes() for f in files if f.exists())
    # The token is stored (by its hash) in these very files...
    assert hashlib.sha256(alice.encode()).hexdigest().encode() in blob
    # ...but neither its secret nor the admin's is.
    assert alice.encode() not in blob
    assert server.token.encode() not in blob
    server.stop()
    blob = b"".join(f.read_bytes() for f in server.data_dir.glob("kapsel.db*"))
    assert alice.encode() not in blob and server.token.encode() not in blob
    # Nor does the server log it.
    assert alice not in server.log()
