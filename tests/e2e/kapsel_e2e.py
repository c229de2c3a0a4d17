"""Helpers of the end-to-end tier: a `kapsel serve` process and its clients.

Every server runs from the binary named by $KAPSEL_BIN (default: the
workspace's target/debug/kapsel) on a free loopback port with a fresh data
directory, and serves HTTPS with the CA it writes to DATA/tls/ca.crt.

Helpers on a server: `api()` (HTTPS with the admin token and the CA),
`kapsel()` (the CLI with the server's kubeconfig), `kubectl()` (stock kubectl
with only --kubeconfig), `stop()` (SIGTERM; must exit 0) and `kill()`
(SIGKILL, for crash tests).

A pod's image must name an `Artifact` its namespace pushed, so the server
fixtures push the `STANDARD_IMAGES` (the built `hello` sample) into
`default`, and `create_namespace` into each namespace it makes;
`push_image()` pushes more.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
#: Where kapsel-node's build script (run by `cargo build -p kapsel`) puts the sample workloads of examples/workloads.
WORKLOADS = REPO / "target" / "workloads" / "wasm32-wasip2" / "release"
KAPSEL_BIN = Path(os.environ.get("KAPSEL_BIN", REPO / "target" / "debug" / "kapsel"))
POSTGRES_URL = os.environ.get(
    "KAPSEL_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"
)

#: How long a server may take to answer /readyz, and to exit after SIGTERM.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

ANSI = re.compile(r"\x1b\[[0-9;]*m")

# The environment every child process gets: no ambient connection settings.
_SCRUBBED = ("KUBECONFIG", "KAPSEL_SERVER", "KAPSEL_TOKEN", "KAPSEL_DATA_DIR",
             "KAPSEL_LISTEN", "KAPSEL_DATASTORE")


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.setdefault("RUST_LOG", "info")
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


class KapselServer:
    """One `kapsel serve` process (restartable on the same data directory)."""

    def __init__(self, workdir: Path, name: str, extra_args: list[str] | None = None,
                 datastore: str | None = None):
        self.workdir = workdir
        self.name = name
        self.data_dir = workdir / f"{name}-data"
        self.extra_args = list(extra_args or [])
        self.datastore = datastore
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._log_file = None
        self.kube_cache = workdir / f"{name}-kube-cache"

    # -- paths and credentials -------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig.yaml"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log(self) -> str:
        return strip_ansi(self.log_path.read_text(errors="replace")) if self.log_path.exists() else ""

    # -- life cycle ------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [str(KAPSEL_BIN), "serve", "--data-dir", str(self.data_dir),
               "--listen", f"127.0.0.1:{self.port}"]
        if self.datastore:
            cmd += ["--datastore", self.datastore]
        if "--ingress-listen" not in self.extra_args:
            # Servers run side by side: each local node's ingress on a free port (its Node's kapsel.io/ingress says which).
            cmd += ["--ingress-listen", "127.0.0.1:0"]
        return cmd + self.extra_args

    def spawn(self) -> subprocess.Popen:
        """Starts the process without waiting for it to be ready."""
        assert not self.running, "already running"
        self.starts += 1
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"\n==== start {self.starts}: {' '.join(self.command())}\n".encode())
        self._log_file.flush()
        self.proc = subprocess.Popen(
            self.command(), stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=child_env(), cwd=self.workdir,
        )
        return self.proc

    def start(self) -> "KapselServer":
        for attempt in range(3):
            self.spawn()
            try:
                self.wait_ready()
                return self
            except PortTaken:
                # Another process grabbed the port between free_port() and bind: pick another.
                self.port = free_port()
        raise AssertionError(f"kapsel serve could not bind a port:\n{self.log()}")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | str | None = None
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                log = self.log()
                self.close_log()
                if "Address already in use" in log.split("==== start")[-1]:
                    raise PortTaken()
                raise AssertionError(f"kapsel serve exited with {code} while starting:\n{log}")
            if self.ca.exists():
                try:
                    r = requests.get(f"{self.url}/readyz", verify=str(self.ca), timeout=2)
                    if r.status_code == 200:
                        return
                    last_error = f"HTTP {r.status_code}: {r.text}"
                except requests.RequestException as e:
                    last_error = e
            time.sleep(0.05)
        raise AssertionError(f"kapsel serve was not ready within {timeout}s ({last_error}):\n{self.log()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait; fails the test unless the server exits 0 in time."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.close_log()
                raise AssertionError(
                    f"kapsel serve did not exit within {timeout}s of SIGTERM:\n{self.log()[-4000:]}")
        self.close_log()
        code = self.proc.returncode
        assert code == 0, f"kapsel serve exited with {code} after SIGTERM:\n{self.log()[-4000:]}"
        return code

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to flush anything."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.close_log()

    # The embedded node agent is a child process that outlives `kapsel serve`
    # (so a restart restarts no pod); the fixtures end it with the test.
    def agent_pid(self) -> int | None:
        """The pid of this server's embedded node agent, as DATA/node/agent.json records it."""
        import json

        record = self.data_dir / "node" / "agent.json"
        try:
            return int(json.loads(record.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def agent_alive(self) -> bool:
        pid = self.agent_pid()
        if pid is None:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"

    def stop_agent(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the embedded node agent, if it still runs; waits for it to end."""
        pid = self.agent_pid()
        if pid is None or not self.agent_alive():
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while self.agent_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.agent_alive():
            os.kill(pid, signal.SIGKILL)

    def close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- clients ---------------------------------------------------------------
    def api(self, method: str, path: str, token: str | None = "admin", **kwargs) -> requests.Response:
        """One HTTPS request; `token=None` sends no Authorization header."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if token == "admin":
            token = self.token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 30)
        return requests.request(method, f"{self.url}{path}", headers=headers,
                                verify=str(self.ca), **kwargs)

    def kapsel(self, *args: str, input: str | None = None, connection: list[str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
        """The kapsel CLI; by default with `--kubeconfig` of this server."""
        if connection is None:
            connection = ["--kubeconfig", str(self.kubeconfig)]
        return subprocess.run(
            [str(KAPSEL_BIN), *connection, *args], input=input, capture_output=True,
            text=True, env=child_env(), cwd=self.workdir, timeout=timeout,
        )

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [kubectl_bin(), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            input=input, capture_output=True, text=True, cwd=self.workdir, timeout=timeout,
            env=child_env(KUBECACHEDIR=str(self.kube_cache)),
        )

    def kubectl_popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [kubectl_bin(), "--kubeconfig", str(self.kubeconfig), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, cwd=self.workdir, env=child_env(KUBECACHEDIR=str(self.kube_cache)),
        )


class PortTaken(Exception):
    pass


def kubectl_bin() -> str:
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl is not on PATH (tests/run.sh puts .venv/bin first)")
    return found


# -- API helpers used across modules ---------------------------------------------

# The pods of the API tests name a scheduler nobody runs, so that no
# controller writes to them (Kapsel's scheduler leaves a pod naming another
# `schedulerName` alone, as Kubernetes' does): those tests watch, compare
# and count only their own writes. Tests of scheduling leave it out.
UNPLACED = "e2e-unplaced"


#: The images pushed into `default` by the server fixtures and into every namespace
#: `create_namespace` makes — each of them the `hello` sample, so one blob —, for tests
#: whose pods are not about images.
STANDARD_IMAGES = ("app:1", "app:2", "web:1", "web:2", "proxy:1")

#: The image of `pod_manifest` (one of `STANDARD_IMAGES`).
DEFAULT_IMAGE = "app:1"


def workload(name: str = "hello") -> Path:
    """The built sample workload `name` (`hello`, `fail`, `worker`, `memhog`, `spin`)."""
    path = WORKLOADS / f"{name}.wasm"
    if not path.is_file():
        pytest.fail(f"{path} does not exist: `cargo build -p kapsel` builds examples/workloads "
                    "(kapsel-node's build script; it needs the wasm32-wasip2 target)")
    return path


def push_image(server: KapselServer, namespace: str, image: str, sample: str = "hello",
               token: str | None = "admin") -> dict:
    """Pushes the built sample workload `sample` into `namespace` as `image` (`NAME:TAG`, or
    `NAME` for `NAME:latest`) through the push endpoint, as `kapsel push` does; returns the Artifact."""
    name, _, tag = image.partition(":")
    r = server.api("POST", f"/apis/kapsel.io/v1alpha1/namespaces/{namespace}/artifacts/{name}/push",
                   token=token, params={"tag": tag or "latest"}, data=workload(sample).read_bytes(),
                   headers={"Content-Type": "application/wasm"})
    assert r.status_code == 200, f"pushing {image} into {namespace}: {r.text}"
    return r.json()


def push_images(server: KapselServer, namespace: str, images=STANDARD_IMAGES,
                token: str | None = "admin") -> None:
    """Pushes the `hello` sample into `namespace` under each of `images`."""
    for image in images:
        push_image(server, namespace, image, token=token)


def pod_manifest(name: str, namespace: str | None = None, image: str = DEFAULT_IMAGE,
                 labels: dict | None = None, scheduler: str | None = UNPLACED, **extra_meta) -> dict:
    meta: dict = {"name": name, **extra_meta}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    spec: dict = {"containers": [{"name": "main", "image": image}]}
    if scheduler:
        spec["schedulerName"] = scheduler
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def create_namespace(server: KapselServer, name: str, token: str | None = "admin",
                     images=STANDARD_IMAGES) -> dict:
    """Creates namespace `name` and pushes `images` into it."""
    r = server.api("POST", "/api/v1/namespaces", token=token,
                   json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert r.status_code == 201, r.text
    push_images(server, name, images, token=token)
    return r.json()


def create_pod(server: KapselServer, namespace: str, name: str, token: str | None = "admin",
               **kwargs) -> dict:
    r = server.api("POST", f"/api/v1/namespaces/{namespace}/pods", token=token,
                   json=pod_manifest(name, **kwargs))
    assert r.status_code == 201, r.text
    return r.json()


def assert_status(response: requests.Response, code: int, reason: str) -> dict:
    """Checks that `response` is a Kubernetes failure Status with `code` and `reason`."""
    assert response.status_code == code, f"expected HTTP {code}, got {response.status_code}: {response.text}"
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    status = response.json()
    assert status.get("kind") == "Status", status
    assert status.get("apiVersion") == "v1", status
    assert status.get("status") == "Failure", status
    assert status.get("code") == code, status
    assert status.get("reason") == reason, status
    assert status.get("message"), status
    return status


# -- tenants: tokens with roles, and their connections (for the hostile tier and others) --

def create_token(server: KapselServer, user: str, grants: dict[str, str] | None = None) -> str:
    """Issues a token for `user` with `grants` ({namespace: view|edit|owner}) through
    `kapsel token create`; returns its secret."""
    args = ["token", "create", "--user", user]
    for namespace, role in (grants or {}).items():
        args += ["--namespace", namespace, "--role", role]
    made = server.kapsel(*args)
    assert made.returncode == 0, made.stdout + made.stderr
    return made.stdout.strip()


def tenant_connection(server: KapselServer, token: str) -> list[str]:
    """The kapsel CLI's connection flags for a tenant's `token` (for `server.kapsel(connection=…)`)."""
    return ["--server", server.url, "--token", token, "--certificate-authority", str(server.ca)]


def tenant_kubeconfig(server: KapselServer, token: str, path: Path) -> Path:
    """Writes a copy of the server's kubeconfig at `path` whose user is `token`
    (for `server.kubectl(kubeconfig=…)` as a tenant)."""
    import json

    import yaml

    config = yaml.safe_load(server.kubeconfig.read_text())
    for entry in config.get("users", []):
        entry["user"] = {"token": token}
    path.write_text(json.dumps(config))
    return path


def psql(sql: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `sql` in the `postgres` database of POSTGRES_URL's server; a failure fails the test unless `check` is false."""
    parts = urllib.parse.urlsplit(POSTGRES_URL)
    cmd = ["psql", "-v", "ON_ERROR_STOP=1", "-X", "-q", "-t", "-A", "-h", parts.hostname or "127.0.0.1",
           "-p", str(parts.port or 5432), "-U", urllib.parse.unquote(parts.username or "postgres"),
           "-d", "postgres", "-c", sql]
    env = dict(os.environ)
    if parts.password:
        env["PGPASSWORD"] = urllib.parse.unquote(parts.password)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    if check and result.returncode != 0:
        pytest.fail(f"psql failed ({sql}): {result.stderr.strip()}\n"
                    f"is PostgreSQL running at {parts.hostname}:{parts.port}? (KAPSEL_TEST_POSTGRES_URL)")
    return result
