"""NATS decentralised authentication: a ``.creds`` file (user JWT and nkey seed) or an
nkey seed file, as the ``nats`` CLI's ``--creds`` and ``--nkey`` take them.

The files are read and checked before connecting, so a mistake is one line naming
the file. The seed and the JWT never appear in a message: errors say what is
wrong, not what the file holds.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
from typing import Any

import nkeys

from workbench.errors import SourceError

__all__ = ["NatsAuth", "nats_auth"]

#: The role an nkey's prefix byte stands for, to tell a wrong key in words.
_ROLES = {
    nkeys.PREFIX_BYTE_USER: "a user",
    nkeys.PREFIX_BYTE_ACCOUNT: "an account",
    nkeys.PREFIX_BYTE_OPERATOR: "an operator",
    nkeys.PREFIX_BYTE_SERVER: "a server",
    nkeys.PREFIX_BYTE_CLUSTER: "a cluster",
}


class NatsAuth:
    """A user's nkey (and, from a ``.creds`` file, its JWT), ready to answer a server's nonce.

    The repr names the file only: an object printed in a notebook or a log
    must not show the key.
    """

    def __init__(
        self,
        option: str,
        path: str,
        seed: str,
        jwt: str | None = None,
        expires: dt.datetime | None = None,
    ) -> None:
        self.option = option
        self.path = path
        self._keys = _user_keys(f"{option} {path}", seed)
        # nats-py signs with the seed itself when given nkeys_seed_str (nkey auth).
        self._seed = seed
        self.jwt = jwt
        #: The user JWT's ``exp``, told when the server refuses an expired one.
        self.expires = expires
        self.public_key: str = self._keys.public_key.decode()

    def __repr__(self) -> str:
        return f"NatsAuth({self.option} {self.path})"

    def signature(self, nonce: str) -> bytes:
        """The nonce signed with the seed, base64url without padding (as nats.go sends it;
        the server also reads nats-py's padded standard base64)."""
        return base64.urlsafe_b64encode(self._keys.sign(nonce.encode())).rstrip(b"=")

    def connect_fields(self, nonce: str) -> dict[str, str]:
        """What CONNECT carries for the server's ``nonce``: ``sig``, and ``jwt`` (creds)
        or ``nkey``, the public key (nkey auth); nats-py's ``_connect_command`` does the same."""
        fields = {"sig": self.signature(nonce).decode()}
        if self.jwt is not None:
            fields["jwt"] = self.jwt
        else:
            fields["nkey"] = self.public_key
        return fields

    def nats_py_options(self) -> dict[str, Any]:
        """The same for ``nats.connect`` (its public options, with the material read here)."""
        if self.jwt is not None:
            jwt = self.jwt.encode()
            return {"signature_cb": self.signature, "user_jwt_cb": lambda: jwt}
        return {"nkeys_seed_str": self._seed}

    def refused(self) -> str:
        """Why the server may have said "Authorization Violation", for its one-line error."""
        what = "user JWT" if self.jwt is not None else "nkey"
        hint = f" (the server does not accept the {what} of {self.option} {self.path}"
        now = dt.datetime.now(dt.UTC)
        if self.expires is not None and self.expires <= now:
            hint += f": it expired {self.expires:%Y-%m-%d %H:%M} UTC"
        return hint + ")"


def nats_auth(
    creds: str | os.PathLike[str] | None = None, nkey: str | os.PathLike[str] | None = None
) -> NatsAuth | None:
    """Read a ``.creds`` file or an nkey seed file; None when neither is given.

    >>> nats_auth() is None
    True
    >>> nats_auth(creds="a.creds", nkey="b.nk")
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: give --creds or --nkey, not both (a .creds file holds its own nkey seed)
    >>> nats_auth(nkey="/no/such.nk")
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: --nkey /no/such.nk: cannot read it: No such file or directory
    """
    if creds is not None and nkey is not None:
        raise SourceError(
            "give --creds or --nkey, not both (a .creds file holds its own nkey seed)"
        )
    if creds is not None:
        path = os.fspath(creds)
        return _from_creds(path, _read("--creds", path))
    if nkey is not None:
        path = os.fspath(nkey)
        return _from_seed_file(path, _read("--nkey", path))
    return None


def _read(option: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise SourceError(f"{option} {path}: not a text file") from None
    except OSError as exc:
        raise SourceError(f"{option} {path}: cannot read it: {exc.strerror or exc}") from None


def _block(lines: list[str], name: str) -> str | None:
    """The first line inside the ``-----BEGIN <name>-----`` block (None without one);
    nsc writes ``------END <name>------`` after it, with one dash more."""
    for i, line in enumerate(lines):
        if line.startswith("-") and f"BEGIN {name}" in line:
            for inside in lines[i + 1 :]:
                if inside.startswith("-") and "END" in inside:
                    return ""
                if inside:
                    return inside
            return ""
    return None


def _from_creds(path: str, text: str) -> NatsAuth:
    """A ``.creds`` file, as ``nsc`` and Synadia Cloud write it.

    >>> _from_creds("x.creds", "SUAB\\n")
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: --creds x.creds: no user JWT in it (a .creds file has a -----BEGIN NATS USER JWT----- block; give a bare seed file as --nkey)
    """
    where = f"--creds {path}"
    lines = [line.strip() for line in text.splitlines()]
    jwt = _block(lines, "NATS USER JWT")
    if not jwt:
        raise SourceError(
            f"{where}: no user JWT in it (a .creds file has a -----BEGIN NATS USER JWT----- "
            "block; give a bare seed file as --nkey)"
        )
    seed = _block(lines, "USER NKEY SEED")
    if not seed:
        raise SourceError(
            f"{where}: no user nkey seed in it (a -----BEGIN USER NKEY SEED----- block)"
        )
    claims = _claims(where, jwt)
    nats = claims.get("nats")
    kind = nats.get("type") if isinstance(nats, dict) else None
    if kind is not None and kind != "user":
        raise SourceError(f"{where}: its JWT is of type {str(kind)[:20]!r}, not a user JWT")
    expires = claims.get("exp")
    auth = NatsAuth(
        "--creds",
        path,
        seed,
        jwt,
        dt.datetime.fromtimestamp(expires, dt.UTC) if isinstance(expires, int) else None,
    )
    if claims.get("sub") != auth.public_key:  # the server would only say "Authorization Violation"
        raise SourceError(f"{where}: its user JWT is for another nkey than the seed in it")
    return auth


def _claims(where: str, jwt: str) -> dict[str, Any]:
    """The JWT's claims (its signature is the server's to check)."""
    parts = jwt.split(".")
    try:
        if len(parts) != 3 or not jwt.isascii():
            raise ValueError
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        if not isinstance(claims, dict):
            raise ValueError
    except (ValueError, binascii.Error):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SourceError(f"{where}: the user JWT in it is not a JWT") from None
    return claims


def _from_seed_file(path: str, text: str) -> NatsAuth:
    """An nkey seed file: the seed alone (``nk -gen user``), or decorated in a block.

    >>> _from_seed_file("u.nk", "UABCDEFG\\n")
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: --nkey u.nk: no nkey seed in it (the seed is the line starting with SU; a public key starts with U)
    """
    where = f"--nkey {path}"
    lines = [line.strip() for line in text.splitlines()]
    if _block(lines, "NATS USER JWT") is not None:
        raise SourceError(f"{where}: this is a .creds file; give it as --creds")
    seed = _block(lines, "USER NKEY SEED")
    if seed is None:
        candidates = [line for line in lines if line and not line.startswith(("#", "//"))]
        seed = candidates[0] if len(candidates) == 1 else ""
    if not seed.startswith("S"):
        raise SourceError(
            f"{where}: no nkey seed in it (the seed is the line starting with SU; "
            "a public key starts with U)"
        )
    return NatsAuth("--nkey", path, seed)


def _user_keys(where: str, seed: str) -> Any:
    """The key pair of a user's seed; a seed that is not one is told without showing it.

    >>> _user_keys("--nkey a.nk", "SAALFLHJJNY2TN76SLBWJT5OMNWE3LJGFQFSIEPW26UOXXXZQX5TB36CXM")
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: --nkey a.nk: the seed in it is an account seed; a user's is needed
    >>> _user_keys("--nkey a.nk", "SAALFLHJJNA2TN76SLBWJT5OMNWE3LJGFQFSIEPW26UOXXXZQX5TB36CXM")
    Traceback (most recent call last):
    ...
    workbench.errors.SourceError: --nkey a.nk: the nkey seed in it is damaged (its checksum does not match)
    """
    raw = bytearray(seed.encode())
    try:
        decoded = base64.b32decode(raw + b"=" * (-len(raw) % 8))
        # nkeys.decode_seed skips the CRC16 at the end; a typo would sign with another key.
        damaged = nkeys.crc16_checksum(decoded[:-2]) != decoded[-2:]
        role, _ = nkeys.decode_seed(raw)
        keys = nkeys.from_seed(raw)
    except Exception:  # nkeys raises its own errors and binascii's; neither says more
        raise SourceError(f"{where}: the nkey seed in it is not valid (cut short?)") from None
    if damaged:
        raise SourceError(f"{where}: the nkey seed in it is damaged (its checksum does not match)")
    if role != nkeys.PREFIX_BYTE_USER:
        raise SourceError(
            f"{where}: the seed in it is {_ROLES.get(role, 'another')} seed; a user's is needed"
        )
    return keys
