"""Admission policies end to end: IT applies the required-labels policy of
policies/ with kubectl, and pods without the label are refused with the
policy's message — by kubectl, the kapsel CLI and the Python client alike.
"""

from __future__ import annotations

import json

from kapsel_e2e import REPO, assert_status, pod_manifest

POLICY = REPO / "policies" / "required-labels" / "policy.yaml"
MESSAGE = 'admission policy "require-cost-center" denied the request: you must provide labels: {"cost-center"}'


def test_a_policy_applied_with_kubectl_refuses_unlabelled_pods(server):
    applied = server.kubectl("apply", "-f", str(POLICY))
    assert applied.returncode == 0, applied.stderr
    listed = server.kapsel("get", "clusteradmissionpolicies")
    assert listed.returncode == 0 and "require-cost-center" in listed.stdout and "true" in listed.stdout, listed.stdout

    refused = server.kubectl("run", "web", "-n", "default", "--image", "registry.example/web:1", "--restart", "Never")
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
    warned = server.kubectl("run", "db", "-n", "default", "--image", "registry.example/db:1", "--restart", "Never")
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
