"""Decoding the stored state of the Python ``eventsourcing`` library.

The library stores each event's attributes as JSON bytes (its
``JSONTranscoder``: compact separators, custom types as
``{"_type_": NAME, "_data_": VALUE}``), optionally zlib-compressed
(``COMPRESSOR_TOPIC``) and then AES-GCM-encrypted (``CIPHER_TOPIC``: 12-byte
nonce, 16-byte tag, ciphertext). This module turns a column of such states
into JSON text with the scalar typed encodings (datetimes, UUIDs, decimals)
replaced by their plain string values, vectorised where the bytes are plain
JSON; only compressed or encrypted states are handled one by one.

>>> import pyarrow as pa, zlib
>>> plain = b'{"timestamp":{"_type_":"datetime_iso","_data_":"2024-05-01T10:00:00+00:00"},"n":1}'
>>> out = decode_states(pa.array([plain, zlib.compress(plain), b"\\xff\\x00garbage"]))
>>> out.data.to_pylist()[:2] == ['{"timestamp":"2024-05-01T10:00:00+00:00","n":1}'] * 2
True
>>> out.data[2].as_py(), out.payload[2].as_py(), out.undecodable
(None, b'\\xff\\x00garbage', 1)
>>> out = decode_states(pa.array([b'{"owner":"tr']))  # cut short: not JSON after all
>>> out.data.to_pylist(), out.payload.to_pylist(), out.undecodable
([None], [b'{"owner":"tr'], 1)
"""

from __future__ import annotations

import base64
import os
import zlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from workbench import envelope
from workbench.errors import SourceError

__all__ = ["DecodedStates", "decode_states", "flatten_typed_encodings"]

# A UUID, stored as 32 hex digits: the canonical hyphenated text, as the store's own
# originator_id (the stream) reads, so a UUID in a payload joins to a stream as is.
_UUID_HEX = (
    r'\{"_type_":"uuid_hex","_data_":"([0-9a-fA-F]{8})([0-9a-fA-F]{4})([0-9a-fA-F]{4})'
    r'([0-9a-fA-F]{4})([0-9a-fA-F]{12})"\}'
)
# Scalar typed encodings whose value is a JSON string: replace the object by the string.
_TYPED_SCALAR = (
    r'\{"_type_":"(?:datetime_iso|uuid_hex|decimal_str|date_iso)",'
    r'"_data_":("(?:[^"\\]|\\.)*")\}'
)
_ZLIB_FIRST = 0x78  # zlib header's CMF byte for deflate with a 32K window


@dataclass(frozen=True)
class DecodedStates:
    """JSON text per state (null where undecodable), the raw bytes of undecodable ones."""

    data: pa.Array
    payload: pa.Array
    undecodable: int


def flatten_typed_encodings(json_text: pa.Array) -> pa.Array:
    """Replace ``{"_type_":"datetime_iso","_data_":"…"}`` (and UUID, decimal) by the string.

    UUIDs come out in their canonical, hyphenated form:

    >>> uuid = '{"_type_":"uuid_hex","_data_":"dcf6f4d5f15a40dda94b11f7921dbd0d"}'
    >>> flatten_typed_encodings(pa.array(['{"ref":' + uuid + ',"n":1}'])).to_pylist()
    ['{"ref":"dcf6f4d5-f15a-40dd-a94b-11f7921dbd0d","n":1}']
    """
    canonical = pc.replace_substring_regex(json_text, _UUID_HEX, r'"\1-\2-\3-\4-\5"')
    return pc.replace_substring_regex(canonical, _TYPED_SCALAR, r"\1")


def decode_states(states: pa.Array, *, cipher_key: str | None = None) -> DecodedStates:
    """Decode a binary column of stored states into JSON text.

    Raises :class:`SourceError` when the states are encrypted and no (or the
    wrong) ``cipher_key`` is given: every non-empty state in the batch fails
    to decode, which is what an encrypted store looks like.
    """
    states = states.cast(pa.binary())
    raw: list[bytes | None] = states.to_pylist() if cipher_key else []
    if cipher_key:
        raw = _decrypt_all(raw, cipher_key)
        states = pa.array(raw, pa.binary())
    first = pc.binary_slice(states, 0, 1)
    is_json = pc.fill_null(pc.equal(first, pa.scalar(b"{", pa.binary())), False)
    if pc.all(is_json).as_py():
        text = _as_text(states)
        if text is not None:
            return _json_only(
                DecodedStates(flatten_typed_encodings(text), pa.nulls(len(states), pa.binary()), 0),
                states,
            )
    # Some states are compressed (or broken): decode those one by one.
    texts: list[str | None] = []
    payloads: list[bytes | None] = []
    bad = 0
    for value, plain_json in zip(states.to_pylist(), is_json.to_pylist(), strict=True):
        text = _decode_one(value, plain_json)
        texts.append(text)
        payloads.append(value if text is None and value is not None else None)
        bad += text is None and value is not None
    non_empty = len(states) - states.null_count
    if non_empty and bad == non_empty:
        raise SourceError(
            "stored states are neither JSON nor zlib-compressed JSON: the store looks "
            f"encrypted (CIPHER_TOPIC); give its CIPHER_KEY {_KEY_WAYS}"
            if not cipher_key
            else "stored states do not decode after decryption; is this an eventsourcing store?"
        )
    # A store that turned encryption on later mixes plain and encrypted states. Archived
    # without the key, the encrypted ones would be undecodable payloads for good.
    sealed = 0 if cipher_key else sum(map(_looks_encrypted, payloads))
    if sealed:
        raise SourceError(
            f"{sealed:,} of {non_empty:,} stored states look encrypted (CIPHER_TOPIC: neither "
            f"JSON nor zlib, nonce and tag long); give the store's CIPHER_KEY {_KEY_WAYS}, "
            "or the archive would keep them undecoded for good"
        )
    data = flatten_typed_encodings(pa.array(texts, pa.string()))
    return _json_only(DecodedStates(data, pa.array(payloads, pa.binary()), bad), states)


#: Where a store's key may be given, as the errors say it.
_KEY_WAYS = (
    "(--cipher-key or cipher_key=, or <APP>_CIPHER_KEY or CIPHER_KEY in the environment, "
    "as the library reads it)"
)


def cipher_key_from_environment(table: str | None) -> tuple[str, str] | None:
    """The cipher key the eventsourcing library would use for ``table`` from the
    environment, and the variable holding it: ``<APP>_CIPHER_KEY`` (an application's
    own, its events in ``<app>_events``), else ``CIPHER_KEY``.

    >>> os.environ["CARTS_CIPHER_KEY"] = "k"
    >>> cipher_key_from_environment("public.carts_events")
    ('k', 'CARTS_CIPHER_KEY')
    >>> cipher_key_from_environment('"Shop"."carts_events"')
    ('k', 'CARTS_CIPHER_KEY')
    >>> del os.environ["CARTS_CIPHER_KEY"]
    """
    name = (table or "").rpartition(".")[2].strip('"')
    app = name.removesuffix("_events") if name.endswith("_events") else ""
    for variable in ([f"{app.upper()}_CIPHER_KEY"] if app and app != "stored" else []) + [
        "CIPHER_KEY"
    ]:
        if key := os.environ.get(variable):
            return key, variable
    return None


def _looks_encrypted(state: bytes | None) -> bool:
    """Whether an undecodable state is an AES-GCM one: a 12-byte nonce and a 16-byte tag
    around a body (so over 28 bytes), random bytes rather than text (JSON cut short
    is text). Random bytes start with ``{`` or zlib's byte now and then: not a sign.

    >>> _looks_encrypted(bytes(range(200, 240))), _looks_encrypted(b"{oops"), _looks_encrypted(b"x")
    (True, False, False)
    >>> _looks_encrypted(b"{" + bytes(range(128, 168)))  # random bytes starting with {
    True
    """
    if state is None or len(state) <= 28:
        return False
    try:
        state.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _json_only(decoded: DecodedStates, states: pa.Array) -> DecodedStates:
    """``decoded`` with states that are not JSON after all (cut short, say) moved to payload.

    A state that starts with ``{`` and is UTF-8 is not yet JSON; left in
    ``data``, it would fail every JSON function downstream.
    """
    ok = pc.fill_null(envelope.json_validity(decoded.data), True)
    bad = len(ok) - (pc.sum(ok.cast(pa.int64())).as_py() or 0)
    if not bad:
        return decoded
    return DecodedStates(
        pc.if_else(ok, decoded.data, pa.scalar(None, pa.string())),
        pc.if_else(ok, decoded.payload, states),
        decoded.undecodable + bad,
    )


def _as_text(states: pa.Array) -> pa.Array | None:
    try:
        return states.cast(pa.string())  # validates UTF-8
    except pa.ArrowInvalid:
        return None


def _decode_one(value: bytes | None, plain_json: bool) -> str | None:
    if value is None:
        return None
    if not plain_json and value[:1] == bytes([_ZLIB_FIRST]):
        try:
            value = zlib.decompress(value)
        except zlib.error:
            return None
    if value[:1] != b"{":
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decrypt_all(values: list[bytes | None], cipher_key: str) -> list[bytes | None]:
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise SourceError(
            "decrypting an eventsourcing store needs the 'cryptography' package"
        ) from None
    try:
        aes = AESGCM(base64.b64decode(cipher_key.encode("utf-8"), validate=True))
    except ValueError:
        raise SourceError(
            "the cipher key must be the store's base64 CIPHER_KEY (16, 24 or 32 bytes)"
        ) from None
    out: list[bytes | None] = []
    failed = 0
    plain = 0  # of the failed: states that were never encrypted (JSON or zlib)
    for value in values:
        if value is None:
            out.append(None)
            continue
        nonce, tag, body = value[:12], value[12:28], value[28:]
        try:
            out.append(aes.decrypt(nonce, body + tag, None))
        except (InvalidTag, ValueError):
            failed += 1
            plain += value[:1] in (b"{", bytes([_ZLIB_FIRST]))
            out.append(value)
    # A key exported for another (encrypted) app must not stop an unencrypted one.
    if failed and failed == len(values) - values.count(None) and plain < failed:
        raise SourceError("the cipher key does not decrypt the stored states (wrong CIPHER_KEY?)")
    return out
