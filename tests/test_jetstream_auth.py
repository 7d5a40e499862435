"""NATS decentralised authentication against real servers: ``--nkey`` (a user's nkey in the
server's ``authorization``) and ``--creds`` (operator mode: operator, account and user JWTs
built here, as ``nsc`` would, with the accounts preloaded into a MEMORY resolver)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nkeys
import pytest
from _jetstream_helpers import ce_message, publish
from conftest import NatsServer, _private_nats_server

import workbench as wb
from workbench import cli
from workbench.archive import ArchiveReader
from workbench.errors import SourceError
from workbench.sources.jetstream._auth import nats_auth
from workbench.sources.jetstream._wire import WireConnection

pytestmark = pytest.mark.nats


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _keys(prefix: int) -> tuple[str, str, Any]:
    """A fresh nkey: its seed, its public key and the key pair."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    pair = nkeys.from_seed(bytearray(seed))
    return seed.decode(), pair.public_key.decode(), pair


def _jwt(signer: Any, subject: str, name: str, nats: dict[str, Any], **claims: Any) -> str:
    """A NATS JWT (v2) for ``subject`` signed by ``signer``'s key pair."""
    header = {"typ": "JWT", "alg": "ed25519-nkey"}
    body = {
        "jti": uuid.uuid4().hex.upper(),
        "iat": int(time.time()),
        "iss": signer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": nats,
        **claims,
    }
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
    return f"{signing}.{_b64(signer.sign(signing.encode()))}"


def _creds(jwt: str, seed: str) -> str:
    """A .creds file as nsc writes it."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
              "wildcards": True, "conn": -1, "leaf": -1}  # fmt: skip
_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
_USER = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}


def _no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        assert secret[-24:] not in text  # nor a piece of it


# ---------------------------------------------------------------- nkey user auth


@pytest.fixture
def nkey_server(tmp_path: Path) -> Iterator[tuple[NatsServer, str]]:
    """A current nats-server admitting one user by nkey; with that user's seed."""
    seed, public, _ = _keys(nkeys.PREFIX_BYTE_USER)
    config = tmp_path / "nats.conf"
    config.write_text(f"authorization {{ users = [ {{ nkey: {public} }} ] }}\n")
    for server in _private_nats_server(tmp_path / "nats-store", "-c", str(config)):
        yield server, seed


def test_nkey_user_auth(
    nkey_server: tuple[NatsServer, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--nkey (or NATS_NKEY) archives and samples from a server that admits the user's
    nkey only; the seed is never printed; a wrong seed is refused in one line."""
    server, seed = nkey_server
    publish(server.url, "NK", [ce_message(i) for i in range(5)], create={}, nkeys_seed_str=seed)
    key = tmp_path / "user.nk"
    key.write_text(seed + "\n")
    base = ["jetstream", "--server", server.url, "--stream", "NK"]
    assert cli.run(["archive", *base, "--out", str(tmp_path / "a"), "--nkey", str(key)]) == 0
    assert ArchiveReader(tmp_path / "a").sql("select count(*) from events").fetchall() == [(5,)]
    monkeypatch.setenv("NATS_NKEY", str(key))
    assert cli.run(["sample", *base, "--out", str(tmp_path / "a"), "--duration", "0"]) == 0
    monkeypatch.delenv("NATS_NKEY")
    assert wb.archive_jetstream(server.url, "NK", tmp_path / "b", nkey=key).messages == 5
    out, err = capsys.readouterr()
    assert "5" in out
    _no_secret(out + err, seed)

    # Without a key, and with another user's: one line naming the server, exit 2.
    other_seed, _, _ = _keys(nkeys.PREFIX_BYTE_USER)
    other = tmp_path / "other.nk"
    other.write_text(other_seed)
    for extra in ([], ["--nkey", str(other)]):
        assert cli.run(["archive", *base, "--out", str(tmp_path / "c"), *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert f"cannot connect to NATS at {server.url}" in err
        assert "Authorization Violation" in err
        _no_secret(err, seed, other_seed)
        if not extra:
            assert "the server wants credentials: --creds, --nkey or user:password@" in err
    assert f"the server does not accept the nkey of --nkey {other}" in err

    # The wire reader's own handshake: signed nonce and public key, or the same refusal.
    good, bad = nats_auth(nkey=key), nats_auth(nkey=other)

    async def wire(auth: Any) -> None:
        conn = await WireConnection.connect(server.url, auth=auth)
        await conn.subscribe("_INBOX.wb.test")
        await conn.close()

    asyncio.run(wire(good))
    with pytest.raises(SourceError, match=r"NATS at nats://127\.0\.0\.1:\d+ refused") as refused:
        asyncio.run(wire(bad))
    assert "Authorization Violation" in str(refused.value)
    _no_secret(str(refused.value) + repr(bad), seed, other_seed)


# ---------------------------------------------------------------- creds, operator mode


@pytest.fixture
def operator_server(tmp_path: Path) -> Iterator[tuple[NatsServer, Any, str]]:
    """A current nats-server in operator mode: an account with JetStream (and a system
    account) preloaded into a MEMORY resolver; with the account's key pair and public key."""
    _, operator, operator_keys = _keys(nkeys.PREFIX_BYTE_OPERATOR)
    _, account, account_keys = _keys(nkeys.PREFIX_BYTE_ACCOUNT)
    _, system, _ = _keys(nkeys.PREFIX_BYTE_ACCOUNT)
    claims = {"type": "account", "version": 2}
    operator_jwt = _jwt(operator_keys, operator, "op", {"type": "operator", "version": 2})
    account_jwt = _jwt(
        operator_keys, account, "app", {"limits": {**_UNLIMITED, **_JETSTREAM}, **claims}
    )
    system_jwt = _jwt(operator_keys, system, "SYS", {"limits": _UNLIMITED, **claims})
    config = tmp_path / "nats.conf"
    config.write_text(
        f"operator: {operator_jwt}\nsystem_account: {system}\nresolver: MEMORY\n"
        f"resolver_preload: {{ {account}: {account_jwt}, {system}: {system_jwt} }}\n"
    )
    for server in _private_nats_server(tmp_path / "nats-store", "-c", str(config)):
        yield server, account_keys, account


def test_creds_in_operator_mode(
    operator_server: tuple[NatsServer, Any, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--creds (or NATS_CREDS, or creds= in Python) archives and samples as a user of an
    account of the operator; the seed and JWT are never printed; an expired user JWT
    is refused in one line that says so."""
    server, account_keys, _ = operator_server
    seed, user, _ = _keys(nkeys.PREFIX_BYTE_USER)
    jwt = _jwt(account_keys, user, "archiver", _USER)
    creds = tmp_path / "user.creds"
    creds.write_text(_creds(jwt, seed))
    publish(server.url, "CR", [ce_message(i) for i in range(4)], create={},
            user_credentials=str(creds))  # fmt: skip
    base = ["jetstream", "--server", server.url, "--stream", "CR"]
    assert cli.run(["archive", *base, "--out", str(tmp_path / "a"), "--creds", str(creds)]) == 0
    assert ArchiveReader(tmp_path / "a").sql("select count(*) from events").fetchall() == [(4,)]
    monkeypatch.setenv("NATS_CREDS", str(creds))
    assert cli.run(["archive", *base, "--out", str(tmp_path / "b")]) == 0
    monkeypatch.delenv("NATS_CREDS")
    sampled = wb.sample_jetstream(server.url, "CR", tmp_path / "a", duration=0, creds=creds)
    assert sampled.samples == 1 and sampled.streams["last_seq"].to_list() == [4]
    out, err = capsys.readouterr()
    _no_secret(out + err, seed, jwt)

    # An expired user JWT: the server says "Authorization Violation", we say why.
    expired = tmp_path / "expired.creds"
    expired.write_text(
        _creds(_jwt(account_keys, user, "old", _USER, exp=int(time.time()) - 3600), seed)
    )
    assert cli.run(["archive", *base, "--out", str(tmp_path / "c"), "--creds", str(expired)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"cannot connect to NATS at {server.url}" in err and "Authorization Violation" in err
    assert f"the user JWT of --creds {expired}: it expired" in err
    _no_secret(err, seed, jwt)


def test_bad_credential_files_are_told_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Mistakes in the files are told before connecting (the server here is never reached),
    naming the file and never its contents."""
    seed, user, _ = _keys(nkeys.PREFIX_BYTE_USER)
    account_seed, _, account_keys = _keys(nkeys.PREFIX_BYTE_ACCOUNT)
    jwt = _jwt(account_keys, user, "u", _USER)
    other_seed, _, _ = _keys(nkeys.PREFIX_BYTE_USER)
    damaged = seed[:20] + ("A" if seed[20] != "A" else "B") + seed[21:]
    files = {
        "bare.nk": seed,
        "good.creds": _creds(jwt, seed),
        "crlf.creds": _creds(jwt, seed).replace("\n", "\r\n"),
        "nojwt.creds": f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n",
        "noseed.creds": _creds(jwt, ""),
        "mismatch.creds": _creds(jwt, other_seed),
        "notjwt.creds": _creds("not-a.jwt", seed),
        "account.nk": account_seed,
        "damaged.nk": damaged,
        "public.nk": user,
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert nats_auth(creds=tmp_path / "good.creds") is not None
    crlf = nats_auth(creds=tmp_path / "crlf.creds")
    assert crlf is not None and crlf.jwt == jwt  # no stray \r sent to the server
    cases = [
        (["--creds", "bare.nk"], "--creds {}/bare.nk: no user JWT in it"),
        (["--creds", "nojwt.creds"], "nojwt.creds: no user JWT in it"),
        (["--creds", "noseed.creds"], "noseed.creds: no user nkey seed in it"),
        (["--creds", "mismatch.creds"], "its user JWT is for another nkey than the seed in it"),
        (["--creds", "notjwt.creds"], "notjwt.creds: the user JWT in it is not a JWT"),
        (["--creds", "missing.creds"], "missing.creds: cannot read it: No such file"),
        (["--nkey", "good.creds"], "good.creds: this is a .creds file; give it as --creds"),
        (["--nkey", "account.nk"], "account.nk: the seed in it is an account seed"),
        (["--nkey", "damaged.nk"], "damaged.nk: the nkey seed in it is damaged"),
        (["--nkey", "public.nk"], "public.nk: no nkey seed in it"),
        (["--nkey", "bare.nk", "--creds", "good.creds"], "give --creds or --nkey, not both"),
    ]
    for command in ("archive", "sample"):
        for options, expected in cases:
            paths = [str(tmp_path / o) if i % 2 else o for i, o in enumerate(options)]
            argv = [command, "jetstream", "--server", "nats://127.0.0.1:1", "--stream", "S",
                    "--out", str(tmp_path / "out"), *paths]  # fmt: skip
            assert cli.run(argv) == 2, options
            out, err = capsys.readouterr()
            assert len(err.strip().splitlines()) == 1, err
            assert expected.format(tmp_path) in err, (expected, err)
            _no_secret(out + err, seed, account_seed, other_seed, damaged, jwt)
    assert not (tmp_path / "out").exists()  # told before the archive was touched
