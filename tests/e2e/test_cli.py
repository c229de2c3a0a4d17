"""The kapsel CLI (`apply`, `get`, `describe`, `delete`) against `kapsel serve`."""

from __future__ import annotations

import json
import re

import yaml

from kapsel_e2e import UNPLACED, push_images

# The pods name a scheduler nobody runs (kapsel_e2e.UNPLACED): they stay Pending, as the tables show.
SHOP = f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: cart
  namespace: shop
  labels: {{app: cart, tier: backend}}
spec:
  schedulerName: {UNPLACED}
  containers:
  - name: main
    image: cart:1
    env:
    - {{name: REGION, value: eu-west}}
---
apiVersion: v1
kind: Pod
metadata:
  name: storefront-with-a-long-name
  namespace: shop
  labels: {{app: storefront, tier: frontend}}
spec:
  schedulerName: {UNPLACED}
  containers:
  - {{name: main, image: storefront:1}}
  - {{name: proxy, image: proxy:1}}
"""

BLOG = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: blog}}
---
apiVersion: v1
kind: Pod
metadata: {{name: writer, namespace: blog, labels: {{tier: backend}}}}
spec:
  schedulerName: {UNPLACED}
  containers: [{{name: main, image: writer:1}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: reader, namespace: blog, labels: {{tier: frontend}}}}
spec:
  schedulerName: {UNPLACED}
  containers: [{{name: main, image: reader:1}}]
"""

#: The images the pods of SHOP and BLOG name (cart:2 for the changed SHOP).
IMAGES = {"shop": ("cart:1", "cart:2", "storefront:1", "proxy:1"), "blog": ("writer:1", "reader:1")}

DEBUG_DUMP = re.compile(r"ApiFailure|Status \{|StatusDetails|Error \{|\bOk\(|\bErr\(|panicked")


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def failed(result):
    """A failed command: non-zero exit, a plain `error: …` message, no Rust debug output."""
    assert result.returncode != 0, f"expected a failure\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.stderr.startswith("error: "), result.stderr
    assert not DEBUG_DUMP.search(result.stderr), f"a debug dump instead of a message: {result.stderr}"
    return result.stderr


def columns(text: str) -> tuple[list[str], list[list[str]]]:
    """Splits an aligned table by the header's column starts, checking the alignment."""
    lines = text.rstrip("\n").splitlines()
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[1:]:
        for start in starts[1:]:
            assert line[start - 1] == " " and line[start] != " ", \
                f"cell not aligned under its header at column {start}:\n{header}\n{line}"
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        rows.append(cells)
    return names, rows


def prepare(server, manifest: str) -> str:
    """Applies the manifest's namespace (its first document) and pushes the images its pods
    name into it: images are pushed into a namespace that exists. Returns what apply printed."""
    namespace = manifest.split("---\n")[0]
    out = ok(server.kapsel("apply", "-f", "-", input=namespace))
    push_images(server, yaml.safe_load(namespace)["metadata"]["name"], IMAGES[yaml.safe_load(namespace)["metadata"]["name"]])
    return out


def applied(server, tmp_path):
    prepare(server, SHOP)
    manifest = tmp_path / "shop.yaml"
    manifest.write_text(SHOP)
    return manifest, ok(server.kapsel("apply", "-f", str(manifest)))


def test_apply_multi_document_from_file_and_stdin(server, tmp_path):
    assert prepare(server, SHOP).splitlines() == ["namespace/shop created"]
    manifest, out = applied(server, tmp_path)
    assert out.splitlines() == ["namespace/shop unchanged", "pod/cart created",
                                "pod/storefront-with-a-long-name created"]
    # The same documents again, from standard input: nothing changes.
    again = ok(server.kapsel("apply", "-f", "-", input=SHOP))
    assert again.splitlines() == ["namespace/shop unchanged", "pod/cart unchanged",
                                  "pod/storefront-with-a-long-name unchanged"]
    # New documents from standard input are created.
    assert prepare(server, BLOG).splitlines() == ["namespace/blog created"]
    assert ok(server.kapsel("apply", "-f", "-", input=BLOG)).splitlines() == [
        "namespace/blog unchanged", "pod/writer created", "pod/reader created"]
    # A changed document is configured, and the change is stored.
    changed = SHOP.replace("cart:1", "cart:2")
    assert "pod/cart configured" in ok(server.kapsel("apply", "-f", "-", input=changed)).splitlines()
    cart = server.api("GET", "/api/v1/namespaces/shop/pods/cart").json()
    assert cart["spec"]["containers"][0]["image"] == "cart:2"
    assert cart["spec"]["containers"][0]["env"] == [{"name": "REGION", "value": "eu-west"}]
    # A directory applies every manifest in it.
    directory = tmp_path / "dir"
    directory.mkdir()
    (directory / "a.yaml").write_text(SHOP)
    (directory / "b.yml").write_text(BLOG)
    (directory / "notes.txt").write_text("not a manifest")
    lines = ok(server.kapsel("apply", "-f", str(directory))).splitlines()
    assert len(lines) == 6 and "pod/cart configured" in lines


def test_get_table(server, tmp_path):
    applied(server, tmp_path)
    out = ok(server.kapsel("get", "pods", "-n", "shop"))
    names, rows = columns(out)
    assert names == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [r[:4] for r in rows] == [["cart", "0/1", "Pending", "0"],
                                     ["storefront-with-a-long-name", "0/2", "Pending", "0"]]
    assert all(re.fullmatch(r"(\d+[smhdy])+", r[4]) for r in rows), rows
    # Short names and the singular work too.
    assert [r[0] for r in columns(ok(server.kapsel("get", "po", "-n", "shop")))[1]] == [r[0] for r in rows]
    assert columns(ok(server.kapsel("get", "pod", "cart", "-n", "shop")))[1][0][0] == "cart"
    # An empty namespace says so and succeeds.
    empty = server.kapsel("get", "pods")
    assert empty.returncode == 0 and empty.stdout == ""
    assert "No resources found in default namespace." in empty.stderr


def test_get_yaml_and_json_parse_back(server, tmp_path):
    applied(server, tmp_path)
    listed = yaml.safe_load(ok(server.kapsel("get", "pods", "-n", "shop", "-o", "yaml")))
    assert listed["kind"] == "List"
    assert [p["metadata"]["name"] for p in listed["items"]] == ["cart", "storefront-with-a-long-name"]
    as_json = json.loads(ok(server.kapsel("get", "pods", "-n", "shop", "-o", "json")))
    assert [p["metadata"]["uid"] for p in as_json["items"]] == [p["metadata"]["uid"] for p in listed["items"]]
    one = json.loads(ok(server.kapsel("get", "pod", "cart", "-n", "shop", "-o", "json")))
    assert one["kind"] == "Pod" and one["apiVersion"] == "v1"
    assert one == server.api("GET", "/api/v1/namespaces/shop/pods/cart").json()
    ns = yaml.safe_load(ok(server.kapsel("get", "ns", "shop", "-o", "yaml")))
    assert ns["kind"] == "Namespace" and ns["status"]["phase"] == "Active"


def test_get_yaml_is_read_back_as_the_same_strings(server, tmp_path):
    """`-o yaml` must be read back as what it printed by the YAML 1.1 parsers
    kubectl (go-yaml) and PyYAML use: strings such as "no", "on" or a date stay strings."""
    tricky = {"a": "no", "b": "on", "c": "yes", "d": "off", "e": "y", "f": "1.0", "g": "true"}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "tricky", "labels": tricky, "annotations": {"since": "2024-01-01"}},
           "spec": {"schedulerName": UNPLACED, "containers": [{"name": "main", "image": "app:1"}]}}
    assert server.api("POST", "/api/v1/namespaces/default/pods", json=pod).status_code == 201
    stored = server.api("GET", "/api/v1/namespaces/default/pods/tricky").json()
    printed = ok(server.kapsel("get", "pod", "tricky", "-o", "yaml"))
    read_back = yaml.safe_load(printed)
    assert read_back["metadata"]["labels"] == tricky, printed
    assert read_back == stored, printed
    # The printed YAML can be fed to kubectl as it is.
    (tmp_path / "tricky.yaml").write_text(printed)
    result = server.kubectl("apply", "-f", str(tmp_path / "tricky.yaml"))
    assert result.returncode == 0, result.stderr


def test_get_across_namespaces_and_by_label(server, tmp_path):
    applied(server, tmp_path)
    prepare(server, BLOG)
    ok(server.kapsel("apply", "-f", "-", input=BLOG))
    names, rows = columns(ok(server.kapsel("get", "pods", "-A")))
    assert names[:2] == ["NAMESPACE", "NAME"]
    assert sorted((r[0], r[1]) for r in rows) == [
        ("blog", "reader"), ("blog", "writer"), ("shop", "cart"), ("shop", "storefront-with-a-long-name")]
    _, rows = columns(ok(server.kapsel("get", "pods", "-A", "-l", "tier=backend")))
    assert sorted((r[0], r[1]) for r in rows) == [("blog", "writer"), ("shop", "cart")]
    _, rows = columns(ok(server.kapsel("get", "pods", "-n", "shop", "-l", "tier in (frontend),app")))
    assert [r[0] for r in rows] == ["storefront-with-a-long-name"]
    nothing = server.kapsel("get", "pods", "-A", "-l", "app=none")
    assert nothing.returncode == 0 and nothing.stdout == ""
    bad = failed(server.kapsel("get", "pods", "-A", "-l", "tier in (frontend"))
    assert "selector" in bad.lower() or "tier" in bad


def test_describe_pod(server, tmp_path):
    applied(server, tmp_path)
    out = ok(server.kapsel("describe", "pod", "cart", "-n", "shop"))
    fields = dict(re.findall(r"^(\w+):\s+(.*)$", out, flags=re.M))
    assert fields["Name"] == "cart" and fields["Namespace"] == "shop" and fields["Kind"] == "Pod"
    assert fields["Status"] == "Pending"
    assert "app=cart" in out and "tier=backend" in out
    assert "cart:1" in out and "REGION" in out
    uid = server.api("GET", "/api/v1/namespaces/shop/pods/cart").json()["metadata"]["uid"]
    assert fields["UID"] == uid
    missing = failed(server.kapsel("describe", "pod", "nope", "-n", "shop"))
    assert 'pods "nope" not found' in missing


def test_delete_pod(server, tmp_path):
    applied(server, tmp_path)
    out = ok(server.kapsel("delete", "pod", "cart", "-n", "shop"))
    assert out.strip() == 'pod "cart" deleted'
    assert server.api("GET", "/api/v1/namespaces/shop/pods/cart").status_code == 404
    again = failed(server.kapsel("delete", "pod", "cart", "-n", "shop"))
    assert again.strip() == 'error: pods "cart" not found'
    _, rows = columns(ok(server.kapsel("get", "pods", "-n", "shop")))
    assert [r[0] for r in rows] == ["storefront-with-a-long-name"]


def test_errors_print_the_server_message(server, tmp_path):
    missing = failed(server.kapsel("get", "pod", "nope"))
    assert missing.strip() == 'error: pods "nope" not found'

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\n"
                       "spec:\n  containers: [{name: main}]\n")
    message = failed(server.kapsel("apply", "-f", str(invalid)))
    assert 'Pod "bad" is invalid' in message and "spec.containers[0].image" in message

    # One bad document does not stop the others, and the exit code reports it.
    mixed = invalid.read_text() + "---\n" + SHOP.split("---\n")[0]
    result = server.kapsel("apply", "-f", "-", input=mixed)
    assert result.returncode != 0 and "namespace/shop created" in result.stdout
    assert "spec.containers[0].image" in result.stderr

    unknown = failed(server.kapsel("get", "widgets"))
    assert "widgets" in unknown
    denied = failed(server.kapsel("get", "pods", connection=["--server", server.url, "--token", "wrong",
                                                             "--certificate-authority", str(server.ca)]))
    assert "Unauthorized" in denied
    unreachable = failed(server.kapsel("get", "pods", connection=[
        "--server", "https://127.0.0.1:1", "--token", "x", "--certificate-authority", str(server.ca)]))
    assert "cannot reach" in unreachable and "127.0.0.1:1" in unreachable
    no_file = failed(server.kapsel("apply", "-f", str(tmp_path / "absent.yaml")))
    assert "absent.yaml" in no_file
