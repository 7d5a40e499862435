"""Keeping secrets out of output: passwords in DSNs and server URLs.

>>> redact("postgresql://app:s3cret@db:5432/prod")
'postgresql://app:***@db:5432/prod'
>>> redact("connection to host=db password=s3cret user=app failed")
'connection to host=db password=*** user=app failed'
>>> redact("nats://token@localhost:4222")
'nats://***@localhost:4222'
>>> redact("nats://alice:Summer@2024@h1:4222,nats://bob:pw@h2")  # '@' in a password
'nats://alice:***@h1:4222,nats://bob:***@h2'
>>> redact("postgresql://app:se,cret@db/x")  # ',' in a password
'postgresql://app:***@db/x'

Patterns cannot know every way a secret is written (a URL without its
scheme, a password with a space). So the places that take a DSN or a server
URL also :func:`remember` it, and its secrets are then hidden wherever they
appear, as written and percent-decoded:

>>> remember("alice:top secret@127.0.0.1:4222", token=True)
>>> redact("cannot connect to NATS at alice:top secret@127.0.0.1:4222")
'cannot connect to NATS at alice:***@127.0.0.1:4222'
>>> remember("my-t0ken@h1", token=True); redact("sent my-t0ken to h1")
'sent *** to h1'
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

__all__ = ["redact", "remember"]

# scheme://user:password@host  and  scheme://token@host; a password runs to the
# last '@' before the host (it may hold '@' or ','), a list of URLs splits at ',' + scheme.
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?:(?!,\s*[a-zA-Z][a-zA-Z0-9+.-]*://)\S)*(?=@)"
)
_URL_TOKEN = re.compile(r"(?P<head>\b(?:nats|tls|ws|wss)://)[^:/@\s]+(?=@)")
# libpq keyword form: password=... or password='...'
_KEYWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


# Secrets of the DSNs and URLs given to this process, longest first.
_KNOWN: list[str] = []
_SCHEME = re.compile(r"^\s*[a-zA-Z][a-zA-Z0-9+.-]*://")


def remember(target: str, *, token: bool = False) -> None:
    """Hide the password (and, with ``token``, a NATS token) of ``target`` from now on.

    ``target`` is a DSN (URI or ``key=value``) or a comma-separated list of
    server URLs, with or without a scheme. Secrets shorter than 3
    characters are left to the patterns (hiding every "pw" would garble text).
    """
    found = [m.group(2).strip("'") for m in _KEYWORD.finditer(target)]
    for one in re.split(r",(?=\s*[a-zA-Z][a-zA-Z0-9+.-]*://)", target):
        authority = _SCHEME.sub("", one)
        userinfo, at, _ = authority.rpartition("@")
        if not at or "=" in userinfo.partition(":")[0]:
            continue
        user, has_password, password = userinfo.partition(":")
        if has_password:
            found.append(password)
        elif token and user:
            found.append(user)
    for secret in found:
        for form in {secret, unquote(secret), quote(unquote(secret), safe="")}:
            if len(form) >= 3 and form not in _KNOWN:
                _KNOWN.append(form)
    _KNOWN.sort(key=len, reverse=True)


def redact(text: str) -> str:
    """Replace every password or token in ``text`` with ``***``."""
    text = _URL_PASSWORD.sub(r"\g<head>***", text)
    text = _URL_TOKEN.sub(r"\g<head>***", text)
    text = _KEYWORD.sub(r"\g<head>***", text)
    for secret in _KNOWN:
        text = text.replace(secret, "***")
    return text
