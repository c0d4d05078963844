"""`pik ingest`'s reader: the input's lines, read in blocks and split in bulk, are exactly the requests the
input holds, whatever the stream delivers at a time.

The oracle below is the reader's contract written line by line: a request is its line without the
``\\n`` (or ``\\r\\n``) that ends it and, for line 1, without a UTF-8 BOM that starts the input; a line
whose request is longer than the limit is passed as its prefix with the whole line's size and sha256.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.services.ingest import QUARANTINE_MAX_BYTES, NumberedLines, Received
from pik_console.cli.ingest import UTF8_BOM, LineReader

ORIGIN = "file:in.jsonl"


def oracle(data: bytes, limit: int) -> tuple[list[Received], list[int]]:
    """The requests of ``data`` and where each line ends in it (framing included), one line at a time."""
    offset = 0
    if data.startswith(UTF8_BOM):
        offset = len(UTF8_BOM)
    requests: list[Received] = []
    ends: list[int] = []
    number = 0
    while offset < len(data):
        cut = data.find(b"\n", offset)
        content = data[offset:] if cut < 0 else data[offset:cut]
        offset = len(data) if cut < 0 else cut + 1
        number += 1
        body = content[:-1] if content.endswith(b"\r") else content
        if len(body) <= limit:
            requests.append(Received(body, ORIGIN, number))
        else:
            digest = hashlib.sha256(content).hexdigest()
            requests.append(Received(content[:QUARANTINE_MAX_BYTES], ORIGIN, number, len(content), digest))
        ends.append(offset)
    return requests, ends


class Trickle(io.RawIOBase):
    """A stream that gives at most the next of ``sizes`` bytes per read (a pipe under load)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = data
        self._sizes = sizes or [1]
        self._at = 0
        self._turn = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = self._sizes[self._turn % len(self._sizes)]
        self._turn += 1
        chunk = self._data[self._at : self._at + min(want, len(buffer))]
        buffer[: len(chunk)] = chunk
        self._at += len(chunk)
        return len(chunk)


LINE = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"", b"\r", b'{"a":1}', b'{"a":1}\r', b"\r\r", UTF8_BOM, UTF8_BOM + b"x", b"x" * 40]),
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(LINE, max_size=30),
    bom=st.booleans(),
    final_newline=st.booleans(),
    block=st.integers(1, 64),
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=5),
    batch=st.integers(1, 7),
    limit=st.integers(0, 20),
)
def test_the_batches_are_the_inputs_lines_whatever_the_reads(
    lines: list[bytes],
    bom: bool,
    final_newline: bool,
    block: int,
    sizes: list[int],
    batch: int,
    limit: int,
) -> None:
    data = (UTF8_BOM if bom else b"") + b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    expected, ends = oracle(data, limit)
    reader = LineReader(io.BufferedReader(Trickle(data, sizes), buffer_size=64), ORIGIN, limit)
    reader.BLOCK = block
    batches = list(reader.batches(batch))
    assert [item for b in batches for item in b] == expected
    assert all(isinstance(b, NumberedLines) and 0 < len(b) <= batch for b in batches)
    assert all(len(b) == batch for b in batches[:-1])
    # Each batch knows where its last line ends in the input: the progress bar's figure.
    assert [b.end for b in batches] == [ends[b.last - 1] for b in batches]
    assert reader.bytes_read == len(data)


def test_a_line_too_long_to_hold_is_streamed_through_its_digest() -> None:
    """A line of 40 blocks is never held: the reader keeps its prefix and digests the rest as it reads."""
    long = b"x" * 40_000
    data = b'{"a":1}\n' + long + b"\r\n" + b'{"b":2}'
    reader = LineReader(io.BytesIO(data), ORIGIN, limit=100)
    reader.BLOCK = 1000
    batch = next(reader.batches(10))
    first, big, last = list(batch)
    assert (first.body, last.body, last.line) == (b'{"a":1}', b'{"b":2}', 3)
    assert big.body == (long + b"\r")[:QUARANTINE_MAX_BYTES]
    assert big.size == len(long) + 1
    assert big.sha256 == hashlib.sha256(long + b"\r").hexdigest()
    assert batch.end == len(data)


def test_numbered_lines_travel_as_their_bodies_and_make_requests_on_demand() -> None:
    import pickle

    batch = NumberedLines(ORIGIN, 7, [b"a", b"prefix", b"c"], {1: (2_000_000, "ab" * 32)}, end=99)
    again = pickle.loads(pickle.dumps(batch))
    assert list(again) == list(batch)
    assert again[1] == Received(b"prefix", ORIGIN, 8, 2_000_000, "ab" * 32)
    assert again[-1] == Received(b"c", ORIGIN, 9)
    assert again[0:2] == [Received(b"a", ORIGIN, 7), again[1]]
    assert (again.first, again.last, again.end, len(again)) == (7, 9, 99, 3)
    head, tail = again.split(2)
    assert list(head) + list(tail) == list(batch)
    assert (head.last, tail.first, tail.end, tail.oversize) == (8, 9, 99, {})
