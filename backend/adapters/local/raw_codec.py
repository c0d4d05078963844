"""How the raw table stores bytes: as received, or compressed with zstd and a dictionary of the workspace.

One event's JSON is a few hundred bytes, too short for a compressor to find much in it alone; with a
dictionary trained on the workspace's own first rows, zstd stores 165 bytes of JSON in about 50
(docs/benchmarks.md, "where a workspace's bytes go"). Each raw row records its codec: 0 for the bytes as
received, ``n`` for zstd with dictionary ``n`` of ``raw_dictionaries``. Dictionaries are immutable once
stored (the schema's triggers), so a row can always be read back; a newer dictionary only changes how new
rows are written. Rows stored before the workspace has a dictionary stay as received.

:class:`Packer` is what the ingest service's prepare step (:class:`backend.ports.RawPacker`) uses: a plain,
picklable value (the dictionary's number and bytes) that builds its compressor where it runs, so batches
are compressed in the prepare worker processes, not by the single writer.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import zstandard

PLAIN = 0
LEVEL = 3
# A dictionary is trained once the workspace holds this many raw rows (or a batch brings it there), from
# at most TRAIN_SAMPLES of them; DICT_BYTES is its size (storage_bench measured 16 KiB as enough).
TRAIN_ROWS = 1000
TRAIN_SAMPLES = 4000
DICT_BYTES = 16 * 1024


@functools.lru_cache(maxsize=16)
def _compressor(data: bytes) -> zstandard.ZstdCompressor:
    zdict = zstandard.ZstdCompressionDict(data)
    zdict.precompute_compress(level=LEVEL)
    # No checksum and no dictionary id in each frame: the row's codec column names the dictionary, and
    # SQLite's own page checks cover the bytes; the frame keeps its content size (exact reads).
    return zstandard.ZstdCompressor(
        level=LEVEL, dict_data=zdict, write_checksum=False, write_dict_id=False, write_content_size=True
    )


@functools.lru_cache(maxsize=16)
def _decompressor(data: bytes) -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(data))


class Packer:
    """Compresses raw bytes with dictionary ``codec`` (bytes ``dictionary``); picklable."""

    __slots__ = ("codec", "dictionary")

    def __init__(self, codec: int, dictionary: bytes) -> None:
        if codec < 1:
            raise ValueError("a packer's codec is a dictionary number (1 or more)")
        self.codec = codec
        self.dictionary = dictionary

    def __getstate__(self) -> tuple[int, bytes]:
        return self.codec, self.dictionary

    def __setstate__(self, state: tuple[int, bytes]) -> None:
        self.codec, self.dictionary = state

    def pack_many(self, bodies: Sequence[bytes]) -> tuple[list[int], list[bytes]]:
        """Each body's codec and stored form: compressed where that is smaller, else as received."""
        compress = _compressor(self.dictionary).compress
        codec = self.codec
        codecs: list[int] = []
        stored: list[bytes] = []
        for body in bodies:
            packed = compress(body)
            if len(packed) < len(body):
                codecs.append(codec)
                stored.append(packed)
            else:
                codecs.append(PLAIN)
                stored.append(body)
        return codecs, stored


def unpack(codec: int, data: bytes, dictionaries: dict[int, bytes]) -> bytes:
    """The bytes as received of a row stored with ``codec``; KeyError if its dictionary is not given."""
    if codec == PLAIN:
        return bytes(data)
    return _decompressor(dictionaries[codec]).decompress(data)


def train(samples: Sequence[bytes]) -> bytes | None:
    """A dictionary trained on ``samples`` (as received), or None if they are too few or too alike to
    train one."""
    if len(samples) < TRAIN_ROWS // 4:
        return None
    try:
        return zstandard.train_dictionary(DICT_BYTES, list(samples[:TRAIN_SAMPLES])).as_bytes()
    except zstandard.ZstdError:
        return None
