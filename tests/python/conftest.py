"""pytest fixtures for the StreamCell end-to-end tests (helpers live in helpers.py).

`start_server(*extra_args, data_dir=None, name="server", wait=True)` starts the real
`streamcell server` binary on free 127.0.0.1 ports in a tmp_path data dir and returns a
helpers.ServerProcess (host, port, data_dir, stop(), kill(), restart(), stub()); `server` is
one started with default options. Processes are always killed at teardown, and each
server's stderr is attached to the report of a failed test. `tls_files` is a session-wide
throwaway PKI (CA, server and client certificates) made with the openssl CLI.
"""

import os
from pathlib import Path
from typing import List, Optional

import pytest

from helpers import ServerProcess, TlsServerProcess, make_tls_files, server_binary


# --------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def start_server(request, tmp_path):
    """Factory: `start_server(*extra_args, data_dir=None, name="server", wait=True, tls_client=None)`.

    With `tls_client` (kwargs of grpc.ssl_channel_credentials) it is a TlsServerProcess: pass
    the --tls-* flags in extra_args yourself; with `token` too, its channels carry
    `authorization: Bearer <token>` as the official client's call credentials do.

    Starts `streamcell server` on fresh 127.0.0.1 ports with a data dir under tmp_path.
    Every process is killed at teardown; its stderr is attached to the report on failure.
    """
    binary = server_binary()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"streamcell binary not found at {binary}: run `cargo build` first "
            "(or set STREAMCELL_BIN / CARGO_TARGET_DIR)",
            pytrace=False,
        )
    servers: List[ServerProcess] = []
    request.node._streamcell_servers = servers

    def factory(*extra_args: str, data_dir: Optional[Path] = None, name: str = "server", wait: bool = True,
                tls_client: Optional[dict] = None, token: Optional[str] = None):
        n = len(servers)
        ddir = Path(data_dir) if data_dir is not None else tmp_path / f"{name}{n}-data"
        ddir.mkdir(parents=True, exist_ok=True)
        if tls_client is not None:
            # A TLS-only server: the harness (wait_ready, stub()) connects with these
            # grpc.ssl_channel_credentials arguments.
            srv = TlsServerProcess(binary, ddir, tmp_path / f"{name}{n}.stderr.log", extra_args, tls_client,
                                   token)
        else:
            srv = ServerProcess(binary, ddir, tmp_path / f"{name}{n}.stderr.log", extra_args)
        servers.append(srv)
        if wait:
            srv.start()
        return srv

    yield factory
    for srv in servers:
        srv.teardown()


@pytest.fixture
def server(start_server) -> ServerProcess:
    """A running server with default options."""
    return start_server()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> dict:
    """A throwaway CA, server and client certificates for this session (helpers.make_tls_files)."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for srv in getattr(item, "_streamcell_servers", []):
            report.sections.append((f"streamcell stderr {srv.log_path.name}", srv.log_tail(20000)))


