"""Schemathesis against the served OpenAPI document (issue 11: no panic is
reachable from input — zero 5xx).

The server serves `/openapi/v2` and `/openapi/v3/{group-version}` for
kubectl: their operations name a kind and its `dryRun`/`fieldValidation`
parameters, but declare neither their path parameters (`{namespace}`,
`{name}`) nor request bodies, so a fuzzer given them as they are sends
literal `{namespace}` segments and empty bodies. The test therefore fetches
the served OpenAPI v3 documents of the core (`api/v1`) and `kapsel.io`
groups, checks that they load in Schemathesis as served, and runs
Schemathesis on them *completed*: the path parameters declared (a namespace
that exists among others, any name), Kubernetes' query parameters of each
verb (limit, continue, selectors, resourceVersion, gracePeriodSeconds,
propagationPolicy, …), a JSON object body for POST and PUT (any object, and
Kubernetes-shaped ones), the three patch media types for PATCH, and the
endpoints the document leaves out (policy reviews, template instantiation,
artifact pushes, pod status and logs). Nothing is removed from what the
server serves.

Left out, because they would hang or are not requests: `watch=true` and
log `follow=true` (streams that only end at their timeout). Every request
has a timeout.

Schemathesis runs twice — with the IT admin's token and with a tenant's
(edit in `fuzz`, view in `default`) — with the `not_a_server_error` check
only, in positive and negative modes, a fixed seed (KAPSEL_SCHEMATHESIS_SEED
to change it) and a bounded number of examples per operation
(KAPSEL_SCHEMATHESIS_EXAMPLES, default 25). Every 5xx is a failure; the
message lists each with the request that caused it (a curl line).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kapsel_e2e import child_env, create_token, pod_manifest, push_images

SEED = os.environ.get("KAPSEL_SCHEMATHESIS_SEED", "11")
EXAMPLES = os.environ.get("KAPSEL_SCHEMATHESIS_EXAMPLES", "25")
#: The wall-time bound of one Schemathesis run (the subprocess is ended past it).
RUN_TIMEOUT = 240
#: The group-versions fuzzed: the core group and Kapsel's own.
GROUP_VERSIONS = ("api/v1", "apis/kapsel.io/v1alpha1")


def schemathesis_bin() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if not found:
        pytest.fail("schemathesis is not installed (tests/e2e/requirements.txt; pip install -r it into .venv)")
    return found


# -- completing the served document ---------------------------------------------------------

STRING = {"type": "string"}
QUERY_BY_VERB = {
    "list": {"limit": {"type": "integer"}, "continue": STRING, "labelSelector": STRING, "fieldSelector": STRING,
             "resourceVersion": STRING, "resourceVersionMatch": STRING, "timeoutSeconds": {"type": "integer"},
             "pretty": STRING, "allowWatchBookmarks": {"type": "boolean"}},
    "get": {"resourceVersion": STRING, "pretty": STRING},
    "post": {"fieldManager": STRING, "pretty": STRING},
    "put": {"fieldManager": STRING, "pretty": STRING},
    "patch": {"fieldManager": STRING, "force": {"type": "boolean"}, "pretty": STRING},
    "delete": {"gracePeriodSeconds": {"type": "integer"}, "propagationPolicy": STRING,
               "orphanDependents": {"type": "boolean"}, "pretty": STRING},
}

OBJECT_META = {
    "type": "object",
    "properties": {
        "name": STRING, "namespace": STRING, "generateName": STRING, "resourceVersion": STRING,
        "labels": {"type": "object", "additionalProperties": STRING},
        "annotations": {"type": "object", "additionalProperties": STRING},
        "finalizers": {"type": "array", "items": STRING},
    },
}


def body_schema(api_version: str, kind: str) -> dict:
    """Any JSON object, or one shaped like the kind's (so that more of them reach validation)."""
    return {"oneOf": [
        {"type": "object"},
        {"type": "object", "required": ["apiVersion", "kind", "metadata"],
         "properties": {"apiVersion": {"enum": [api_version]}, "kind": {"enum": [kind]}, "metadata": OBJECT_META,
                        "spec": {"type": "object"}, "status": {"type": "object"}}},
    ]}


JSON_PATCH = {"type": "array", "items": {
    "type": "object", "required": ["op", "path"],
    "properties": {"op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
                   "path": STRING, "from": STRING, "value": {}}}}


def path_parameter(name: str, known: dict[str, list[str]]) -> dict:
    """`{namespace}` or `{name}`: one of the names that exist (so that requests reach past the
    lookup), or any string."""
    schema = {"anyOf": [{"enum": known[name]}, {"type": "string", "minLength": 1}]}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def complete(documents: dict[str, dict], known: dict[str, list[str]]) -> dict:
    """One OpenAPI 3.0 document: the served ones' paths, completed (see the module's text)."""
    paths: dict[str, dict] = {}
    for group_version, document in documents.items():
        api_version = group_version.removeprefix("api/").removeprefix("apis/")
        for path, item in document["paths"].items():
            item = copy.deepcopy(item)
            # Path-level parameters are replaced by each operation's completed ones below.
            item.pop("parameters", None)
            for method, operation in item.items():
                verb = operation.get("x-kubernetes-action", method)
                kind = operation.get("x-kubernetes-group-version-kind", {}).get("kind", "")
                declared = {p["name"] for p in operation.get("parameters", [])}
                parameters = [p for p in operation.get("parameters", []) if p.get("in") != "path"]
                parameters += [path_parameter(name, known) for name in re.findall(r"{(\w+)}", path)]
                parameters += [{"name": name, "in": "query", "schema": schema}
                               for name, schema in QUERY_BY_VERB.get(verb, {}).items() if name not in declared]
                operation["parameters"] = parameters
                if method in ("post", "put"):
                    operation["requestBody"] = {"required": True, "content": {
                        "application/json": {"schema": body_schema(api_version, kind)}}}
                elif method == "patch":
                    operation["requestBody"] = {"required": True, "content": {
                        "application/merge-patch+json": {"schema": {"type": "object"}},
                        "application/strategic-merge-patch+json": {"schema": body_schema(api_version, kind)},
                        "application/json-patch+json": {"schema": JSON_PATCH}}}
                elif method == "delete":
                    operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"gracePeriodSeconds": {"type": "integer"},
                                                         "propagationPolicy": STRING,
                                                         "preconditions": {"type": "object"}}}}}}
            paths[path] = item

    def operation(operation_id: str, parameters: list[dict], body: dict | None = None, media: str = "application/json") -> dict:
        op = {"operationId": operation_id, "parameters": parameters, "responses": {"200": {"description": "OK"}}}
        if body is not None:
            op["requestBody"] = {"required": True, "content": {media: {"schema": body}}}
        return op

    ns, name = path_parameter("namespace", known), path_parameter("name", known)
    query = lambda n, s: {"name": n, "in": "query", "schema": s}  # noqa: E731
    # The endpoints the served document leaves out (streams excluded).
    paths["/apis/kapsel.io/v1alpha1/policyreviews"] = {"post": operation("createPolicyReview", [], {"oneOf": [
        {"type": "object"},
        {"type": "object", "required": ["spec"], "properties": {
            "apiVersion": {"enum": ["kapsel.io/v1alpha1"]}, "kind": {"enum": ["PolicyReview"]},
            "spec": {"type": "object", "properties": {
                "policyRef": {"type": "object", "properties": {"name": STRING, "namespace": STRING}},
                "policy": {"type": "object"}, "object": {"type": "object"}, "oldObject": {"type": "object"},
                "operation": STRING, "userInfo": {"type": "object"}}}}}]})}
    paths["/apis/kapsel.io/v1alpha1/clusterworkloadtemplates/{name}/instantiate"] = {"post": operation(
        "instantiateClusterWorkloadTemplate", [name], {"type": "object"})}
    paths["/apis/kapsel.io/v1alpha1/namespaces/{namespace}/workloadtemplates/{name}/instantiate"] = {"post": operation(
        "instantiateWorkloadTemplate", [ns, name], {"type": "object"})}
    paths["/apis/kapsel.io/v1alpha1/namespaces/{namespace}/artifacts/{name}/push"] = {"post": operation(
        "pushArtifact", [ns, name, query("tag", STRING)], {"type": "string", "format": "binary", "maxLength": 4096},
        media="application/octet-stream")}
    paths["/apis/kapsel.io/v1alpha1/clusteradmissionpolicies/{name}/audit"] = {"post": operation(
        "auditClusterAdmissionPolicy", [name])}
    paths["/apis/kapsel.io/v1alpha1/namespaces/{namespace}/admissionpolicies/{name}/audit"] = {"post": operation(
        "auditAdmissionPolicy", [ns, name])}
    paths["/apis/kapsel.io/v1alpha1/plugins/{name}/rollback"] = {"post": operation("rollbackPlugin", [name])}
    paths["/api/v1/namespaces/{namespace}/pods/{name}/log"] = {"get": operation("readPodLog", [
        ns, name, query("container", STRING), query("tailLines", {"type": "integer"}),
        query("limitBytes", {"type": "integer"}), query("sinceSeconds", {"type": "integer"}),
        query("previous", {"type": "boolean"}), query("timestamps", {"type": "boolean"})])}
    paths["/api/v1/namespaces/{namespace}/pods/{name}/status"] = {
        "get": operation("readPodStatus", [ns, name]),
        "put": operation("replacePodStatus", [ns, name], body_schema("v1", "Pod")),
        "patch": operation("patchPodStatus", [ns, name], {"type": "object"}, media="application/merge-patch+json"),
    }
    return {"openapi": "3.0.0", "info": {"title": "Kapsel (served document, completed)", "version": "e2e"},
            "paths": paths}


def fetch_documents(server) -> dict[str, dict]:
    index = server.api("GET", "/openapi/v3")
    assert index.status_code == 200, index.text
    documents = {}
    for group_version in GROUP_VERSIONS:
        assert group_version in index.json()["paths"], index.json()
        r = server.api("GET", f"/openapi/v3/{group_version}")
        assert r.status_code == 200, r.text
        documents[group_version] = r.json()
    return documents


# -- running it --------------------------------------------------------------------------------

def run_schemathesis(server, schema: Path, token: str, report: Path, *extra: str, timeout: float = RUN_TIMEOUT):
    command = [
        schemathesis_bin(), "run", str(schema), "--url", server.url,
        "--checks", "not_a_server_error",
        "-H", f"Authorization: Bearer {token}",
        "--tls-verify", str(server.ca),
        "--request-timeout", "10",
        "--max-examples", EXAMPLES,
        "--seed", SEED,
        "--workers", "2",
        "--include-method-regex", "^(GET|POST|PUT|PATCH|DELETE)$",
        "--suppress-health-check", "all",
        "--no-color",
        "--report", "junit", "--report-junit-path", str(report), "--output-truncate", "false",
        *extra,
    ]
    started = time.monotonic()
    # Without the ambient CA bundles, which would override --tls-verify in requests.
    env = {k: v for k, v in child_env().items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=server.workdir, env=env)
    return result, time.monotonic() - started


#: Errors of a run that are reported but not counted: an internal error of Schemathesis or
#: Hypothesis, and a connection the server closed after refusing a request (401/403/413…)
#: before reading its large body — Python's client, still sending, sees the EOF instead of the
#: answer (the server answered; a panic would show in its log, which the test checks).
NOT_COUNTED = ("Runtime Error", "EOF occurred in violation of protocol")


def findings(report: Path) -> tuple[list[str], list[str]]:
    """The JUnit report's failures and errors, as (fatal, tool errors): every failed check
    (a 5xx, with the request that caused it) and every error of the run — a request the server
    did not answer (timeout), a schema Schemathesis could not use — is fatal; the NOT_COUNTED
    errors are reported only."""
    import xml.etree.ElementTree as ElementTree

    fatal, tool = [], []
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        for outcome in list(case.findall("failure")) + list(case.findall("error")):
            text = "\n".join(filter(None, [outcome.get("message"), outcome.text]))
            entry = f"{case.get('name')}: {outcome.tag}\n{text.strip()}"
            not_counted = outcome.tag == "error" and any(mark in text for mark in NOT_COUNTED)
            (tool if not_counted else fatal).append(entry)
    return fatal, tool


def test_the_served_openapi_documents_load_and_declare_their_path_parameters(server):
    """As served (no completion): /openapi/v2 and the v3 documents load in Schemathesis, and
    every operation declares the path parameters of its path — Schemathesis refuses to test one
    that does not ("Path parameters 'namespace', 'name' are not defined")."""
    import schemathesis

    v2 = server.api("GET", "/openapi/v2")
    assert v2.status_code == 200 and v2.json().get("swagger") == "2.0", v2.text[:300]
    documents = {f"/openapi/v3/{gv}": document for gv, document in fetch_documents(server).items()}
    documents["/openapi/v2"] = v2.json()
    missing, total = [], 0
    for url, document in documents.items():
        loaded = schemathesis.openapi.from_dict(document)
        assert [result.ok() for result in loaded.get_all_operations()], f"no operations in {url}"
        for path, item in document["paths"].items():
            templated = set(re.findall(r"{(\w+)}", path))
            for method, operation in item.items():
                if method == "parameters":
                    continue
                total += 1
                declared = {p.get("name") for p in operation.get("parameters", []) + item.get("parameters", [])
                            if p.get("in") == "path"}
                if templated - declared:
                    missing.append(f"{url}: {method.upper()} {path} (undeclared: {', '.join(sorted(templated - declared))})")
    assert not missing, (f"{len(missing)} of {total} operations of the served documents do not declare their path "
                         "parameters, so Schemathesis cannot test them as served:\n  " + "\n  ".join(missing[:12]))


def test_schemathesis_finds_no_server_error(server, tmp_path):
    # Something to find: a tenant namespace with images, a pod, a quota, a template.
    assert server.api("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": "fuzz"}}).status_code == 201
    push_images(server, "fuzz", ("app:1",))
    assert server.api("POST", "/api/v1/namespaces/fuzz/pods", json=pod_manifest("p")).status_code == 201
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": {"pods": "50"}}}
    assert server.api("POST", "/api/v1/namespaces/fuzz/resourcequotas", json=quota).status_code == 201
    tenant = create_token(server, "fuzzer", {"fuzz": "edit", "default": "view"})

    node = server.api("GET", "/api/v1/nodes").json()["items"][0]["metadata"]["name"]
    known = {"namespace": ["fuzz", "default"],
             "name": ["p", "q", "app", "fuzz", "default", node, "spread", "namespace-ipam", "local-volumes"]}
    schema = complete(fetch_documents(server), known)
    schema_path = tmp_path / "openapi.json"
    schema_path.write_text(json.dumps(schema, indent=1))

    found = []
    # The tenant first: the admin's run may delete what the tenant's would find.
    for who, token in (("tenant", tenant), ("admin", server.token)):
        report = tmp_path / f"junit-{who}.xml"
        try:
            result, took = run_schemathesis(server, schema_path, token, report)
        except subprocess.TimeoutExpired as e:
            found.append(f"schemathesis as {who} did not finish within {RUN_TIMEOUT}s:\n{str(e.stdout or '')[-3000:]}")
            continue
        summary = result.stdout[result.stdout.rfind("SUMMARY"):] if "SUMMARY" in result.stdout else result.stdout[-2000:]
        print(f"schemathesis as {who}: exit {result.returncode} in {took:.0f}s\n{summary}")
        assert server.running, f"kapsel serve died under schemathesis as {who}:\n{server.log()[-4000:]}"
        assert report.is_file(), f"schemathesis as {who} wrote no report (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        fatal, tool = findings(report)
        for error in tool:
            print(f"schemathesis as {who}, an error not counted (NOT_COUNTED):\n{error[:1500]}")
        if fatal:
            found.append(f"as {who} ({len(fatal)} operations; {took:.0f}s; JUnit report {report}):\n\n" + "\n\n".join(fatal))
    panics = [line for line in server.log().splitlines() if "panicked" in line]
    if panics:
        found.append("the server logged panics:\n" + "\n".join(panics[:20]))
    assert not found, "\n\n".join(found)
