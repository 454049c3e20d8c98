#!/usr/bin/env bash
# The one command that runs StreamCell's whole test suite, on a fresh Debian machine that
# has only Rust (cargo) and Python 3:
#
#   1. .venv with pytest, hstreamdb==0.5.0 (the official HStreamDB Python client),
#      prometheus-client (its parser checks /metrics) and psycopg 3 (PostgreSQL driver); the
#      openssl CLI for the TLS tests' certificates, psql (postgresql-client) for the
#      PostgreSQL-protocol tests and curl for the HTTPS tests (apt-get, as root, when missing);
#   2. the house rules: cargo fmt --check, the layering check (scripts/check_layers.py: no
#      crate but the binary depends on a door, no module import circles), cargo build
#      --workspace --all-targets and the benchmark binary `peers` (feature `peers`), clippy
#      with -D warnings (the lints of [workspace.lints]) and cargo-machete (unused
#      dependencies; installed, pinned, under target/tools when missing);
#   3. cargo test --workspace: unit tests, and the end-to-end Rust tests of the crate tests/
#      (streamcell-tests) against $STREAMCELL_BIN;
#   4. the end-to-end tests in tests/python against the built `streamcell` binary (last, so
#      pytest's summary is the last line printed).
#
# Extra arguments go to pytest, e.g. `scripts/test.sh -k crash -x`.
# Environment: CARGO_TARGET_DIR (honoured), STREAMCELL_BIN (binary under test; defaults to
# the one just built), PYTHON (interpreter for the venv; default python3).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

stage() { printf '\n==== %s ====\n' "$*"; }

# ---------------------------------------------------------------------------------------------
stage "python venv ($VENV)"

if [ -d "$VENV" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "removing broken venv $VENV"
    rm -rf "$VENV"
fi
if [ ! -d "$VENV" ]; then
    if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        # Debian splits venv/ensurepip out of python3 into python3-venv.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "python venv module missing: installing python3-venv"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        else
            echo "error: '$PY -m venv' is unavailable; install python3-venv (apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
    "$PY" -m venv "$VENV"
fi

# A command the tests run, installed from Debian's package (as root) when missing.
need_command() {  # need_command COMMAND PACKAGE WHY
    if ! command -v "$1" >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "$1 missing ($3): installing $2"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"
        else
            echo "error: $1 is unavailable ($3); install it (apt-get install $2)" >&2
            exit 1
        fi
    fi
}
need_command openssl openssl "tests/python/test_tls.py makes throwaway certificates with it"
need_command psql postgresql-client "tests/python/test_pg.py runs the real psql"
need_command curl curl "tests/python/test_security.py checks HTTPS and tokens with the real curl"

# Skip pip entirely when everything is already installed (fast re-runs, no network).
if "$VENV/bin/python" - <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    ok = (version("hstreamdb") == "0.5.0" and version("pytest")
          and int(version("setuptools").split(".")[0]) < 70 and version("wheel")
          and version("prometheus-client") and int(version("psycopg").split(".")[0]) >= 3
          and version("sqlalchemy") == "2.1.9" and version("pandas") == "3.1.1"
          and version("pgcli") == "4.7.1" and version("asyncpg") == "0.32.0")
    import hstreamdb, HStream.Server.HStreamApi_pb2_grpc  # noqa: F401  (imports must work too)
    import prometheus_client.parser, psycopg, sqlalchemy, pandas, asyncpg  # noqa: F401
except (PackageNotFoundError, ImportError, ValueError):
    ok = False
sys.exit(0 if ok else 1)
EOF
then
    echo "python packages already installed"
else
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    "$VENV/bin/python" -m pip install -q pytest "setuptools<70" wheel prometheus-client "psycopg[binary]>=3.1,<4" \
        sqlalchemy==2.1.9 pandas==3.1.1 pgcli==4.7.1 asyncpg==0.32.0
    # hstreamdb 0.5.0's setup.py imports pkg_resources, which pip's isolated build env no
    # longer provides: build it against the venv's setuptools<70 instead.
    "$VENV/bin/python" -m pip install -q --no-build-isolation hstreamdb==0.5.0
fi
"$VENV/bin/python" -c 'import importlib.metadata as m; print("hstreamdb", m.version("hstreamdb"), "| hstreamdb-api", m.version("hstreamdb-api"), "| grpcio", m.version("grpcio"), "| psycopg", m.version("psycopg"), "| pytest", m.version("pytest"))'

# ---------------------------------------------------------------------------------------------
stage "house rules: cargo fmt --check, layering"
cargo fmt --all --check
"$VENV/bin/python" scripts/check_layers.py

# ---------------------------------------------------------------------------------------------
stage "cargo build --workspace --all-targets"
cargo build --workspace --all-targets
# The side-by-side benchmark (bench/run.sh) needs the Redis and NATS clients, which only the
# `peers` feature builds: build it here too so that it cannot rot unnoticed.
cargo build -p streamcell-bench --features peers --bin peers

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in
    /*) ;;
    *) TARGET_DIR="$ROOT/$TARGET_DIR" ;;
esac

# ---------------------------------------------------------------------------------------------
stage "house rules: clippy -D warnings, unused dependencies"
cargo clippy --workspace --all-targets -- -D warnings
MACHETE_VERSION=0.9.2
MACHETE="$TARGET_DIR/tools/bin/cargo-machete"
if ! "$MACHETE" --version 2>/dev/null | grep -q "$MACHETE_VERSION"; then
    cargo install --quiet --locked cargo-machete --version "$MACHETE_VERSION" --root "$TARGET_DIR/tools"
fi
"$MACHETE" --with-metadata "$ROOT"
export STREAMCELL_BIN="${STREAMCELL_BIN:-$TARGET_DIR/debug/streamcell}"
if [ ! -x "$STREAMCELL_BIN" ]; then
    echo "error: server binary $STREAMCELL_BIN not found after cargo build" >&2
    exit 1
fi

# ---------------------------------------------------------------------------------------------
stage "cargo test --workspace"
cargo test --workspace

# ---------------------------------------------------------------------------------------------
stage "pytest tests/python (server: $STREAMCELL_BIN)"
rc=0
"$VENV/bin/python" -m pytest -q tests/python "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "error: pytest ran no tests" >&2
fi
exit "$rc"
