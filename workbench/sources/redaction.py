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
>>> redact("postgresql://db/x?password=s3cret&sslmode=require: timeout")
'postgresql://db/x?password=***&sslmode=require: timeout'
>>> redact(redact("live 'host=db password=s3cret': expected FILE"))  # twice: the same
"live 'host=db password=***': expected FILE"
>>> redact("host=db password=***hunter2 user=x")  # a secret that merely starts like a mask
'host=db password=*** user=x'

Patterns cannot know every way a secret is written (a URL without its
scheme, a password with a space). So the places that take a DSN or a server
URL also :func:`remember` it, and its secrets are then hidden wherever they
stand before an ``@``, as written and percent-decoded:

>>> remember("alice:top secret@127.0.0.1:4222", token=True)
>>> redact("cannot connect to NATS at alice:top secret@127.0.0.1:4222")
'cannot connect to NATS at alice:***@127.0.0.1:4222'
>>> remember("my-t0ken@h1", token=True); redact("no route to my-t0ken@h1")
'no route to ***@h1'
>>> remember("postgresql://app:test@db/x"); redact("table test.events not found")
'table test.events not found'
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
_KEYWORD = re.compile(r"(?P<head>(?<![?&])\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# ... and a URI's query parameter, which ends at the next '&'.
_QUERY = re.compile(r"(?P<head>[?&]password=)[^&\s]+", re.IGNORECASE)


#: A secret masked already, with the closing quote or colon a mask keeps.
_MASKED = frozenset({"***", "***'", "***:", "***':"})


def _masked(match: re.Match[str]) -> str:
    secret = match[0][len(match["head"]) :]
    if secret in _MASKED:  # masked before: what follows is the message's
        return match[0]
    # "…password=s3cret: connection refused", "'host=db password=s3cret': …": a closing
    # colon or quote is the message's (an unquoted libpq value escapes its quotes).
    kept = ""
    if not secret.startswith("'"):  # a quoted value ends at its own quote
        for end in ("':", "'", ":"):
            if secret.endswith(end) and len(secret) > len(end) and secret[-len(end) - 1] != "\\":
                kept = end
                break
    return f"{match['head']}***{kept}"


# Secrets of the DSNs and URLs given to this process, and one pattern finding any of
# them where a secret stands in a URL: right before its '@'. (Anywhere else the same
# letters may well be a word: a password "test" must not blank a schema named test.)
_KNOWN: frozenset[str] = frozenset()
_KNOWN_AT: re.Pattern[str] | None = None
_SCHEME = re.compile(r"^\s*[a-zA-Z][a-zA-Z0-9+.-]*://")


def remember(target: str, *, token: bool = False) -> None:
    """Hide the password (and, with ``token``, a NATS token) of ``target`` from now on.

    ``target`` is a DSN (URI or ``key=value``) or a comma-separated list of
    server URLs, with or without a scheme.
    """
    global _KNOWN, _KNOWN_AT
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
    forms = {f for s in found for f in (s, unquote(s), quote(unquote(s), safe="")) if f}
    if forms <= _KNOWN:
        return
    known = _KNOWN | forms
    # Built whole and then swapped in: a redact() on another thread sees the old or the new.
    pattern = re.compile(
        "(?:" + "|".join(map(re.escape, sorted(known, key=len, reverse=True))) + ")(?=@)"
    )
    _KNOWN, _KNOWN_AT = known, pattern


def redact(text: str) -> str:
    """Replace every password or token in ``text`` with ``***``."""
    text = _URL_PASSWORD.sub(r"\g<head>***", text)
    text = _URL_TOKEN.sub(r"\g<head>***", text)
    text = _QUERY.sub(_masked, text)
    text = _KEYWORD.sub(_masked, text)
    known = _KNOWN_AT
    return text if known is None else known.sub("***", text)
