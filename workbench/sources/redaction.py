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
"""

from __future__ import annotations

import re

__all__ = ["redact"]

# scheme://user:password@host  and  scheme://token@host; a password runs to the
# last '@' before the host (it may hold '@' or ','), a list of URLs splits at ',' + scheme.
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?:(?!,\s*[a-zA-Z][a-zA-Z0-9+.-]*://)\S)*(?=@)"
)
_URL_TOKEN = re.compile(r"(?P<head>\b(?:nats|tls|ws|wss)://)[^:/@\s]+(?=@)")
# libpq keyword form: password=... or password='...'
_KEYWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """Replace every password or token in ``text`` with ``***``."""
    text = _URL_PASSWORD.sub(r"\g<head>***", text)
    text = _URL_TOKEN.sub(r"\g<head>***", text)
    return _KEYWORD.sub(r"\g<head>***", text)
