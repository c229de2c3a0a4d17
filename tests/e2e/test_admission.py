"""Admission policies end to end: IT applies the required-labels policy of
policies/ with kubectl, and pods without the label are refused with the
policy's message — by kubectl, the kapsel CLI and the Python client alike.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from kapsel_e2e import REPO, assert_status, child_env, pod_manifest

POLICY = REPO / "policies" / "required-labels" / "policy.yaml"
MESSAGE = 'admission policy "require-cost-center" denied the request: you must provide labels: {"cost-center"}'


def test_a_policy_applied_with_kubectl_refuses_unlabelled_pods(server):
    applied = server.kubectl("apply", "-f", str(POLICY))
    assert applied.returncode == 0, applied.stderr
    listed = server.kapsel("get", "clusteradmissionpolicies")
    assert listed.returncode == 0 and "require-cost-center" in listed.stdout and "true" in listed.stdout, listed.stdout

    refused = server.kubectl("run", "web", "-n", "default", "--image", "web:1", "--restart", "Never")
    assert refused.returncode != 0
    assert "Forbidden" in refused.stderr and MESSAGE in refused.stderr, refused.stderr

    status = assert_status(server.api("POST", "/api/v1/namespaces/default/pods", json=pod_manifest("web")), 403, "Forbidden")
    assert status["message"] == MESSAGE, status

    labelled = pod_manifest("web", labels={"cost-center": "42"})
    assert server.api("POST", "/api/v1/namespaces/default/pods", json=labelled).status_code == 201

    # Warn instead of deny: admitted, and kubectl shows the warning.
    patched = server.kubectl("patch", "clusteradmissionpolicy", "require-cost-center", "--type", "merge",
                             "-p", '{"spec":{"enforcement":"warn"}}')
    assert patched.returncode == 0, patched.stderr
    warned = server.kubectl("run", "db", "-n", "default", "--image", "app:1", "--restart", "Never")
    assert warned.returncode == 0, warned.stderr
    assert "Warning:" in warned.stderr and "you must provide labels" in warned.stderr, warned.stderr

    # Broken Rego is refused with where it breaks; the policy in force stays.
    broken = server.api("PATCH", "/apis/kapsel.io/v1alpha1/clusteradmissionpolicies/require-cost-center",
                        headers={"Content-Type": "application/merge-patch+json"},
                        json={"spec": {"rego": "package x\nviolation[{\"msg\": m}] {\n  m := \n}\n"}})
    status = assert_status(broken, 422, "Invalid")
    assert status["details"]["causes"][0]["field"] == "spec.rego", status


def test_kapsel_policy_test_reviews_a_manifest_without_applying_it(server, tmp_path):
    unlabelled = tmp_path / "pod.yaml"
    unlabelled.write_text(json.dumps(pod_manifest("web", namespace="default")))
    denied = server.kapsel("policy", "test", str(POLICY), "--object", str(unlabelled))
    assert denied.returncode == 1, denied.stdout + denied.stderr
    assert denied.stdout.startswith("DENIED (enforcement: deny)"), denied.stdout
    assert 'you must provide labels: {"cost-center"}' in denied.stdout, denied.stdout
    assert 'details: {"missing_labels":["cost-center"]}' in denied.stdout, denied.stdout

    labelled = tmp_path / "labelled.yaml"
    labelled.write_text(json.dumps(pod_manifest("web", namespace="default", labels={"cost-center": "7"})))
    allowed = server.kapsel("policy", "test", str(POLICY), "--object", str(labelled))
    assert allowed.returncode == 0 and allowed.stdout.startswith("ALLOWED"), allowed.stdout + allowed.stderr
    # Nothing was applied: the policy is not in force.
    assert_status(server.api("GET", "/apis/kapsel.io/v1alpha1/clusteradmissionpolicies/require-cost-center"), 404, "NotFound")


def run_kapsel(kapsel_bin, *args: str) -> subprocess.CompletedProcess:
    """The CLI with no server at all."""
    return subprocess.run([str(kapsel_bin), *args], capture_output=True, text=True, env=child_env(), timeout=120)


def test_kapsel_policy_test_runs_the_library_cases_offline(kapsel_bin, tmp_path):
    library = run_kapsel(kapsel_bin, "policy", "test", str(REPO / "policies"))
    assert library.returncode == 0, library.stdout + library.stderr
    assert "PASS  pods-per-owner / " in library.stdout and "FAIL" not in library.stdout, library.stdout
    assert ", 0 failed" in library.stdout.splitlines()[-1], library.stdout

    # A copy of a policy with one deliberately wrong case: FAIL, the difference, exit 1.
    wrong = tmp_path / "no-latest-tag"
    shutil.copytree(REPO / "policies" / "no-latest-tag", wrong)
    (wrong / "cases.yaml").write_text(json.dumps({"cases": [
        {"name": "latest is fine (it is not)", "allowed": True, "messages": [],
         "object": pod_manifest("web", namespace="dev", image="registry.example/web:latest")},
        {"name": "a version is fine", "allowed": True,
         "object": pod_manifest("web", namespace="dev", image="registry.example/web:1.2")},
    ]}))
    failed = run_kapsel(kapsel_bin, "policy", "test", str(wrong))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAIL  no-latest-tag / latest is fine (it is not)" in failed.stdout, failed.stdout
    assert "allowed: expected true, got false" in failed.stdout, failed.stdout
    assert 'whose tag \\"latest\\" can change under you' in failed.stdout, failed.stdout
    assert "PASS  no-latest-tag / a version is fine" in failed.stdout, failed.stdout
    assert "1 passed, 1 failed (1 policy folder(s))" in failed.stdout, failed.stdout


def test_a_policy_counts_existing_pods_through_its_inventory(server, tmp_path):
    # pods-per-owner reads the namespace's pods (data.inventory); IT lowers its limit to one pod per owner.
    applied = server.kapsel("apply", "-f", str(REPO / "policies" / "pods-per-owner" / "policy.yaml"))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    patched = server.api("PATCH", "/apis/kapsel.io/v1alpha1/clusteradmissionpolicies/pods-per-owner",
                         headers={"Content-Type": "application/merge-patch+json"},
                         json={"spec": {"parameters": {"label": "owner", "max": 1}}})
    assert patched.status_code == 200, patched.text

    pods = "/api/v1/namespaces/default/pods"
    first = server.api("POST", pods, json=pod_manifest("alice-1", labels={"owner": "alice"}))
    assert first.status_code == 201, first.text
    assert server.api("POST", pods, json=pod_manifest("bob-1", labels={"owner": "bob"})).status_code == 201
    status = assert_status(server.api("POST", pods, json=pod_manifest("alice-2", labels={"owner": "alice"})), 403, "Forbidden")
    assert status["message"] == (
        'admission policy "pods-per-owner" denied the request: namespace "default" already has 1 pod with owner=alice '
        "and allows at most 1 per owner; delete pods of alice that you no longer need, or ask your IT admin to raise the limit"
    ), status

    # A policy review (of a manifest not applied) sees the stored pods too.
    manifest = (REPO / "policies" / "pods-per-owner" / "policy.yaml").read_text()
    assert "max: 10" in manifest
    strict = tmp_path / "strict.yaml"
    strict.write_text(manifest.replace("max: 10", "max: 1"))
    pod = tmp_path / "pod.yaml"
    pod.write_text(json.dumps(pod_manifest("bob-2", namespace="default", labels={"owner": "bob"})))
    reviewed = server.kapsel("policy", "test", str(strict), "--object", str(pod))
    assert reviewed.returncode == 1 and reviewed.stdout.startswith("DENIED"), reviewed.stdout + reviewed.stderr
    assert "already has 1 pod with owner=bob" in reviewed.stdout, reviewed.stdout

    # Once alice's pod is gone, she may create another.
    assert server.api("DELETE", f"{pods}/alice-1").status_code == 200
    assert server.api("POST", pods, json=pod_manifest("alice-2", labels={"owner": "alice"})).status_code == 201


def test_kapsel_policy_audit_finds_what_was_there_before_the_policy(server):
    for name, labels in (("old-web", None), ("old-db", None), ("billed", {"cost-center": "9"})):
        assert server.api("POST", "/api/v1/namespaces/default/pods",
                          json=pod_manifest(name, labels=labels)).status_code == 201
    applied = server.kubectl("apply", "-f", str(POLICY))
    assert applied.returncode == 0, applied.stderr

    audited = server.kapsel("policy", "audit", "require-cost-center")
    assert audited.returncode == 1, audited.stdout + audited.stderr
    lines = audited.stdout.splitlines()
    assert lines[0].startswith("2 violations in "), audited.stdout
    assert any(line.strip().startswith("Pod default/old-db: you must provide labels") for line in lines), audited.stdout
    assert not any("billed" in line for line in lines), audited.stdout
    listed = server.kubectl("get", "clusteradmissionpolicies")
    header, row = listed.stdout.splitlines()[:2]
    assert row.split()[header.split().index("VIOLATIONS")] == "2", listed.stdout

    unknown = server.kapsel("policy", "audit", "nope")
    assert unknown.returncode != 0 and "not found" in unknown.stderr, unknown.stderr
