"""Kill -9 at random points and NATS server restarts: every message archived exactly once."""

from __future__ import annotations

import os
import random
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from _jetstream_helpers import ce_message, publish

import workbench as wb
from workbench.archive import ArchiveReader, ArchiveWriter

pytestmark = pytest.mark.nats

ROOT = Path(__file__).resolve().parents[1]


def follow(url: str, stream: str, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workbench",
            "archive",
            "jetstream",
            "--server",
            url,
            "--stream",
            stream,
            "--out",
            str(out),
            "--follow",
            *extra,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def archived(out: Path, stream: str) -> int:
    return ArchiveWriter(out, f"jetstream:{stream}").last_position or 0


def wait_for(predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def assert_exactly_once(out: Path, n: int) -> None:
    got = (
        ArchiveReader(out)
        .sql(
            "select count(*), count(distinct global_position), count(distinct event_id), "
            "min(global_position), max(global_position) from events"
        )
        .fetchall()
    )
    assert got == [(n, n, n, 1, n)]


def test_kill_9_at_random_points_then_restart(
    private_nats_server, stream_name: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    url = private_nats_server.url
    total = 6000
    publish(url, stream_name, [ce_message(i) for i in range(500)], create={})
    publishing = threading.Thread(
        target=publish, args=(url, stream_name, [ce_message(i) for i in range(500, total)])
    )
    publishing.start()
    rng = random.Random(20240501)
    kills = 0
    for _ in range(5):
        process = follow(url, stream_name, tmp_path, "--file-events", "150")
        before = archived(tmp_path, stream_name)
        # Kill once it is writing: after it has archived something new, at a random delay.
        # (Waiting on the publisher instead let a loaded machine kill every run before its
        # first file: nothing archived, no mapping recorded.)
        try:
            wait_for(
                lambda before=before: archived(tmp_path, stream_name) > before or before == total,
                60,
            )
        finally:
            time.sleep(rng.uniform(0.0, 0.3))
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
    publishing.join()
    # Killed runs recorded their mapping before their first file: the next run is held to it.
    from workbench.archive.runs import recorded_mappings

    assert recorded_mappings(tmp_path, "jetstream:") == {
        f"jetstream:{stream_name}": ["preset=cloudevents"]
    }
    process = follow(url, stream_name, tmp_path, "--idle-exit", "1")
    assert process.wait(120) == 0, process.stderr.read() if process.stderr else ""
    assert kills == 5
    assert_exactly_once(tmp_path, total)
    # No temporary files of the killed writers remain visible to readers.
    assert not list(tmp_path.glob("source=*/date=*/*.tmp"))


def test_follow_survives_server_restart_and_flushes_on_sigterm(
    private_nats_server, stream_name: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    url = private_nats_server.url
    publish(url, stream_name, [ce_message(i) for i in range(100)], create={})
    process = follow(url, stream_name, tmp_path)
    try:
        wait_for(lambda: archived(tmp_path, stream_name) == 100)
        private_nats_server.restart()
        publish(url, stream_name, [ce_message(i) for i in range(100, 200)])
        wait_for(lambda: archived(tmp_path, stream_name) == 200, 60)
        publish(url, stream_name, [ce_message(i) for i in range(200, 230)])
        time.sleep(0.3)  # the tail is buffered, not yet idle-flushed: SIGTERM must write it
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0, process.stderr.read() if process.stderr else ""
    assert_exactly_once(tmp_path, 230)


def test_credentials_wrong_or_percent_encoded(nats_server_with_password, tmp_path: Path) -> None:
    """A wrong password fails in one line at once (nats-py alone retries forever); a
    password holding every reserved character works percent-encoded and is never shown."""
    from conftest import NATS_PASSWORD

    host = nats_server_with_password.url.removeprefix("nats://")
    messages = [ce_message(i) for i in range(3)]
    publish(f"nats://{host}", "AUTH", messages, create={}, user="alice", password=NATS_PASSWORD)

    def archive(url: str) -> subprocess.CompletedProcess[str]:
        command = ["archive", "jetstream", "--server", url, "--stream", "AUTH"]
        return subprocess.run(
            [sys.executable, "-m", "workbench", *command, "--out", str(tmp_path / "out")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    wrong = archive(f"nats://alice:Summer2024@{host}")
    assert wrong.returncode == 2, wrong.stderr
    assert "Summer" not in wrong.stderr + wrong.stdout and "2024" not in wrong.stderr
    assert wrong.stderr.strip().splitlines()[-1].endswith("nats: 'Authorization Violation'")
    unencoded = archive(f"nats://alice:Summer@2024@{host}")  # nats-py: "invalid hostname"
    assert unencoded.returncode == 2 and "Summer" not in unencoded.stderr + unencoded.stdout
    assert "an '@' in the user or password; percent-encode" in unencoded.stderr
    encoded = quote(NATS_PASSWORD, safe="")
    right = archive(f"nats://alice:{encoded}@{host}")
    assert right.returncode == 0, right.stderr
    assert ArchiveReader(tmp_path / "out").sql("select count(*) from events").fetchall() == [(3,)]
    assert encoded not in right.stdout + right.stderr


def test_a_least_privileged_user_can_archive(nats_server_least_privilege, tmp_path: Path) -> None:
    """Users are commonly allowed to subscribe under _INBOX.> only."""
    host = nats_server_least_privilege.url.removeprefix("nats://")
    publish(f"nats://admin:admin@{host}", "LP", [ce_message(i) for i in range(5)], create={})
    result = wb.archive_jetstream(f"nats://archiver:archiver@{host}", "LP", tmp_path)
    assert result.messages == 5
    # A user without the JetStream API: the server's reason, not a bare timeout.
    with pytest.raises(
        wb.WorkbenchError,
        match=r"the server said: .*permissions violation for publish to .\$js.api",
    ):
        wb.archive_jetstream(f"nats://publisher:publisher@{host}", "LP", tmp_path / "no")


def test_a_server_that_requires_tls(nats_server_with_tls, tmp_path: Path) -> None:
    """Production servers often speak TLS only; a private CA is trusted through SSL_CERT_FILE."""
    server, ca = nats_server_with_tls
    host = server.url.removeprefix("nats://")
    trusted = ssl.create_default_context(cafile=str(ca))
    publish(f"tls://{host}", "SECURE", [ce_message(i) for i in range(4)], create={}, tls=trusted)
    command = ["archive", "jetstream", "--server", f"tls://{host}", "--stream", "SECURE"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SSL_CERT_FILE": str(ca)}
    done = subprocess.run(
        [sys.executable, "-m", "workbench", *command, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "eof_received" not in done.stderr  # asyncio's notice on a closing TLS stream
    assert ArchiveReader(tmp_path / "out").sql("select count(*) from events").fetchall() == [(4,)]
    # Without the CA the certificate is not trusted: one line, exit 2.
    untrusted = subprocess.run(
        [sys.executable, "-m", "workbench", *command, "--out", str(tmp_path / "other")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert untrusted.returncode == 2
    assert "certificate verify failed" in untrusted.stderr.strip().splitlines()[-1]


def test_mutual_tls_with_a_client_certificate(
    nats_server_verifying_clients, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A server that verifies clients: --tls-cert/--tls-key/--tls-ca (or NATS_CERT,
    NATS_KEY, NATS_CA as the nats CLI reads them) archive; without them, one line."""
    server, ca, cert, key = nats_server_verifying_clients
    host = server.url.removeprefix("nats://")
    trusted = wb.sources.jetstream.tls_context(cert, key, ca)
    publish(f"tls://{host}", "MTLS", [ce_message(i) for i in range(3)], create={}, tls=trusted)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "workbench", "archive", "jetstream", "--server",
            f"tls://{host}", "--stream", "MTLS"]  # fmt: skip
    done = subprocess.run(
        [*base, "--out", str(tmp_path / "a"), "--tls-cert", str(cert), "--tls-key", str(key),
         "--tls-ca", str(ca)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ArchiveReader(tmp_path / "a").sql("select count(*) from events").fetchall() == [(3,)]
    by_env = subprocess.run(
        [*base, "--out", str(tmp_path / "b")], capture_output=True, text=True, timeout=60,
        env={**env, "NATS_CERT": str(cert), "NATS_KEY": str(key), "NATS_CA": str(ca)},
    )  # fmt: skip
    assert by_env.returncode == 0, by_env.stderr
    # The library takes the same context.
    result = wb.archive_jetstream(f"nats://{host}", "MTLS", tmp_path / "c", tls=trusted)
    assert result.messages == 3
    without = subprocess.run(
        [*base, "--out", str(tmp_path / "d"), "--tls-ca", str(ca)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert without.returncode == 2
    assert len(without.stderr.strip().splitlines()) == 1, without.stderr
    assert "the server verifies clients: give --tls-cert and --tls-key" in without.stderr
    half = subprocess.run(
        [*base, "--out", str(tmp_path / "e"), "--tls-cert", str(cert)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert half.returncode == 2 and "--tls-cert needs --tls-key" in half.stderr


def test_tls_is_used_wherever_it_was_asked_for(nats_server_allowing_plain, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """nats-py upgrades only when a server requires TLS: to a server that merely offers
    it, or to a fallback server of the list, it would send the password in plain text.
    Every connection is TLS once a tls:// URL asks: an untrusted certificate fails it
    (a plain connection would have no certificate to check), a trusted one archives."""
    from conftest import NATS_PASSWORD

    server, ca = nats_server_allowing_plain
    host = server.url.removeprefix("nats://")
    secret = quote(NATS_PASSWORD, safe="")
    publish(f"nats://{host}", "OPT", [ce_message(i) for i in range(3)], create={},
            user="alice", password=NATS_PASSWORD)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for url in (
        f"tls://alice:{secret}@{host}",
        f"tls://alice:{secret}@127.0.0.1:1,nats://alice:{secret}@{host}",  # the fallback
    ):
        command = [sys.executable, "-m", "workbench", "archive", "jetstream", "--server", url,
                   "--stream", "OPT"]  # fmt: skip
        untrusted = subprocess.run(
            [*command, "--out", str(tmp_path / "untrusted")],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert untrusted.returncode == 2, untrusted.stderr
        assert "certificate verify failed" in untrusted.stderr
        assert "w/rd" not in untrusted.stderr and "w%2Frd" not in untrusted.stderr
        trusted = subprocess.run(
            [*command, "--out", str(tmp_path / "trusted"), "--tls-ca", str(ca)],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert trusted.returncode == 0, trusted.stderr
    assert ArchiveReader(tmp_path / "trusted").sql("select count(*) from events").fetchall() == [
        (3,)
    ]
    assert not (tmp_path / "untrusted").exists()


def test_tls_url_to_a_plain_server_is_refused(nats_url: str, tmp_path: Path) -> None:
    url = nats_url.replace("nats://", "tls://user:hunter2@")
    with pytest.raises(
        wb.WorkbenchError, match=r"tls://user:\*\*\*@.* does not offer TLS; nothing"
    ):
        wb.archive_jetstream(url, "ANY", tmp_path / "out")


def test_a_one_shot_run_stopped_by_a_signal_says_so_and_exits_130(
    private_nats_server, stream_name: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Not a finished archive: `archive && replay` must not go on with part of the stream."""
    url = private_nats_server.url
    total = 60_000
    publish(url, stream_name, [ce_message(i) for i in range(total)], create={})
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench", "archive", "jetstream", "--server", url,
         "--stream", stream_name, "--out", str(tmp_path), "--file-events", "500"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_for(lambda: archived(tmp_path, stream_name) > 0, 60)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    done = archived(tmp_path, stream_name)
    assert done < total, "finished before the signal: make the stream longer"
    assert process.returncode == 130, err.decode()
    assert b"stopped by a signal (run again to go on)" in out
    # What it wrote is whole, and a second run archives the rest exactly once.
    assert wb.archive_jetstream(url, stream_name, tmp_path).messages == total - done
    assert_exactly_once(tmp_path, total)


def test_a_stream_created_with_first_seq_has_no_gap_before_it(
    private_nats_server, stream_name: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """NATS 2.10+ can start a stream at any sequence: the ones below never existed."""
    from _jetstream_helpers import api

    url = private_nats_server.url
    created = api(
        url,
        f"$JS.API.STREAM.CREATE.{stream_name}",
        {"name": stream_name, "subjects": [f"{stream_name.lower()}.>"], "first_seq": 1000},
    )
    assert created.get("config", {}).get("first_seq") == 1000, created
    for _ in range(2):  # archived while still empty: recorded once
        assert wb.archive_jetstream(url, stream_name, tmp_path).messages == 0
    publish(url, stream_name, [ce_message(i) for i in range(5)])
    result = wb.archive_jetstream(url, stream_name, tmp_path)
    assert (result.messages, result.first_seq, result.last_seq) == (5, 1000, 1004)
    assert result.gaps == []
    gaps = wb.open_archive(tmp_path).gaps()
    assert gaps.df().select("first_missing", "last_missing", "reason").rows() == [
        (1, 999, "never-issued")
    ]
    assert gaps.faults.height == 0
    assert wb.archive_jetstream(url, stream_name, tmp_path).gaps == []  # recorded once
    assert wb.open_archive(tmp_path).gaps().df().height == 1
