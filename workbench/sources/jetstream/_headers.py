"""NATS header blocks, a batch at a time: lookups by name and the ``metadata`` JSON.

A header block is the text between ``NATS/1.0`` and the blank line,
``Key: Value`` lines joined by CRLF. The work is vectorised with Arrow
compute; blocks that need JSON escaping beyond quotes and backslashes, or
that repeat a key (kept as a list), go through the exact per-row path.

>>> import pyarrow as pa
>>> h = Headers(pa.array(["ce-id: 1\\r\\nX: a\\r\\nX: b", "", "ce-id: 2"]))
>>> h.metadata().to_pylist()
['{"ce-id":"1","X":["a","b"]}', None, '{"ce-id":"2"}']
>>> h.lookup("CE-ID").to_pylist()
['1', None, '2']
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Headers", "metadata_json"]

# Control characters (other than the CRLF between lines) need JSON escapes that the
# vectorised path does not make; such blocks go through the exact path.
_NEEDS_ESCAPE = r"[\x00-\x09\x0b\x0c\x0e-\x1f]|\r[^\n]|[^\r]\n|\r$"


class Headers:
    """The header blocks of a batch of messages, split once into (row, key, value)."""

    def __init__(self, blocks: pa.Array) -> None:
        self.blocks = blocks
        self.n = len(blocks)
        nonempty = pc.greater(pc.binary_length(blocks), 0)
        lists = pc.split_pattern(pc.if_else(nonempty, blocks, None), "\r\n")
        lines = pc.list_flatten(lists)
        self.row = np.asarray(pc.list_parent_indices(lists))
        pairs = pc.split_pattern(lines, ":", max_splits=1)
        self.key = pc.list_element(pairs, 0)
        self.value = pc.utf8_trim_whitespace(pc.fill_null(pc.list_element(_pad(pairs), 1), ""))
        self._lists = lists
        self._lower: pa.Array | None = None

    def lookup(self, name: str) -> pa.Array:
        """The first value of header ``name`` per message (case-insensitive), else null."""
        hits = np.flatnonzero(np.asarray(pc.equal(self._lowered(), name.lower()).fill_null(False)))
        rows, first = np.unique(self.row[hits], return_index=True)
        index = np.full(self.n, -1, dtype=np.int64)
        index[rows] = hits[first]
        mask = index < 0
        return self.value.take(pa.array(index, mask=mask))

    def any_prefixed(self, prefix: str) -> pa.Array:
        """Whether each message has a header whose name starts with ``prefix`` (case-insensitive).

        >>> Headers(pa.array(["X: 1\\r\\nCE-Type: t", "", "X-ce-id: 1"])).any_prefixed("ce-").to_pylist()
        [True, False, False]
        """
        starts = pc.starts_with(self._lowered(), prefix.lower()).fill_null(False)
        found = np.zeros(self.n, dtype=bool)
        found[self.row[np.flatnonzero(np.asarray(starts))]] = True
        return pa.array(found, pa.bool_())

    def _lowered(self) -> pa.Array:
        """The header names in lower case, computed once."""
        if self._lower is None:
            self._lower = pc.utf8_lower(self.key)
        return self._lower

    def metadata(self) -> pa.Array:
        """All headers per message as JSON text (repeated keys → lists); null without headers."""
        if self.n == 0:
            return pa.array([], pa.string())
        key = _escape(self.key)
        value = _escape(self.value)
        pairs = pc.binary_join_element_wise('"', key, '":"', value, '"', "")
        offsets = self._lists.offsets
        objects = pc.binary_join(pa.ListArray.from_arrays(offsets, pairs), ",")
        text = pc.binary_join_element_wise("{", objects, "}", "")
        slow = self._slow_rows()
        if len(slow):
            exact = [metadata_json(self.blocks[i].as_py()) for i in slow]
            text = _scatter(text, slow, pa.array(exact, pa.string()))
        return pc.if_else(pc.is_null(self._lists), pa.scalar(None, pa.string()), text)

    def _slow_rows(self) -> np.ndarray:
        """Rows with control characters or a repeated key."""
        odd = np.asarray(pc.match_substring_regex(self.blocks, _NEEDS_ESCAPE).fill_null(False))
        rows = set(np.flatnonzero(odd).tolist())
        if len(self.row):
            keys = pc.dictionary_encode(self.key)
            codes = np.asarray(keys.indices.fill_null(-1), dtype=np.int64)
            pair = np.sort(self.row * (len(keys.dictionary) + 1) + codes)
            same = np.flatnonzero(pair[1:] == pair[:-1])
            rows.update((pair[same] // (len(keys.dictionary) + 1)).tolist())
        return np.array(sorted(rows), dtype=np.int64)


def metadata_json(block: str | None) -> str | None:
    """The exact per-row conversion of a header block into JSON text.

    >>> metadata_json('a: 1\\r\\nb: "x"\\r\\na: 2')
    '{"a":["1","2"],"b":"\\\\"x\\\\""}'
    """
    if not block:
        return None
    headers: dict[str, str | list[str]] = {}
    for line in block.split("\r\n"):
        key, _, value = line.partition(":")
        value = value.strip()
        old = headers.get(key)
        if old is None:
            headers[key] = value
        elif isinstance(old, list):
            old.append(value)
        else:
            headers[key] = [old, value]
    return json.dumps(headers, ensure_ascii=False, separators=(",", ":"))


def _pad(pairs: pa.Array) -> pa.Array:
    """Lines without a colon become [key, ""] so element 1 exists."""
    lengths = pc.list_value_length(pairs)
    short = pc.less(lengths, 2)
    if not pc.any(short).as_py():
        return pairs
    fixed = [p if len(p) >= 2 else [*p, ""] for p in pairs.to_pylist()]
    return pa.array(fixed, pa.list_(pa.string()))


def _escape(strings: pa.Array) -> pa.Array:
    strings = pc.replace_substring(strings, "\\", "\\\\")
    return pc.replace_substring(strings, '"', '\\"')


def _scatter(target: pa.Array, rows: np.ndarray, values: pa.Array) -> pa.Array:
    """``target`` with ``values`` put at ``rows``."""
    index = np.arange(len(target), dtype=np.int64)
    index[rows] = len(target) + np.arange(len(rows))
    return pa.concat_arrays([target, values.cast(target.type)]).take(pa.array(index))
