"""Contract of :class:`backend.ports.RawStore`: immutable bytes by key, no overwrite, no delete."""

from __future__ import annotations

import hashlib

from backend.ports import RawObject, RawPutStatus
from tests.conftest import Adapter


def obj(key: str, data: bytes) -> RawObject:
    return RawObject(key, data, hashlib.sha256(data).hexdigest())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_new_key_is_created_and_reads_back_identical(adapter: Adapter) -> None:
    data = b'{"a":1}\n'
    [put] = adapter.raw.put_new([obj("raw/a.json", data)])
    assert put.key == "raw/a.json"
    assert put.status is RawPutStatus.CREATED
    assert put.stored_sha256 == sha(data)
    assert adapter.raw.get("raw/a.json") == data


def test_a_taken_key_is_refused_with_the_stored_sha_and_keeps_its_bytes(adapter: Adapter) -> None:
    first, second = b"first bytes", b"second, different bytes"
    adapter.raw.put_new([obj("raw/k.json", first)])
    [put] = adapter.raw.put_new([obj("raw/k.json", second)])
    assert put.status is RawPutStatus.EXISTS
    # A store may not know what a taken key holds without another call (S3): then it says None...
    assert put.stored_sha256 in (sha(first), None)
    # ...and sha256() tells.
    assert adapter.raw.sha256("raw/k.json") == sha(first)
    assert adapter.raw.get("raw/k.json") == first


def test_sha256_of_a_missing_key_is_none(adapter: Adapter) -> None:
    assert adapter.raw.sha256("raw/missing.json") is None
    adapter.raw.put_new([obj("raw/present.json", b"x")])
    assert adapter.raw.sha256("raw/present.json") == sha(b"x")


def test_putting_the_same_bytes_again_is_exists_not_an_error(adapter: Adapter) -> None:
    data = b"same"
    adapter.raw.put_new([obj("raw/s.json", data)])
    [put] = adapter.raw.put_new([obj("raw/s.json", data)])
    assert put.status is RawPutStatus.EXISTS
    assert put.stored_sha256 in (sha(data), None)
    assert adapter.raw.sha256("raw/s.json") == sha(data)


def test_within_one_call_the_first_object_of_a_key_wins(adapter: Adapter) -> None:
    puts = adapter.raw.put_new(
        [obj("raw/x.json", b"x-first"), obj("raw/y.json", b"y"), obj("raw/x.json", b"x-second")]
    )
    assert [p.key for p in puts] == ["raw/x.json", "raw/y.json", "raw/x.json"]
    assert [p.status for p in puts] == [RawPutStatus.CREATED, RawPutStatus.CREATED, RawPutStatus.EXISTS]
    assert puts[2].stored_sha256 == sha(b"x-first")
    assert adapter.raw.get("raw/x.json") == b"x-first"
    assert adapter.raw.get("raw/y.json") == b"y"


def test_results_are_in_input_order_for_a_mix_of_new_and_taken_keys(adapter: Adapter) -> None:
    adapter.raw.put_new([obj("raw/2.json", b"old 2"), obj("raw/4.json", b"old 4")])
    batch = [obj(f"raw/{i}.json", f"new {i}".encode()) for i in range(6)]
    puts = adapter.raw.put_new(batch)
    assert [p.key for p in puts] == [o.key for o in batch]
    assert [p.status for p in puts] == [
        RawPutStatus.EXISTS if i in (2, 4) else RawPutStatus.CREATED for i in range(6)
    ]
    for i, put in enumerate(puts):
        expected = f"old {i}" if i in (2, 4) else f"new {i}"
        if put.status is RawPutStatus.CREATED:
            assert put.stored_sha256 == sha(expected.encode())
        else:
            assert put.stored_sha256 in (sha(expected.encode()), None)
        assert adapter.raw.sha256(f"raw/{i}.json") == sha(expected.encode())
        assert adapter.raw.get(f"raw/{i}.json") == expected.encode()


def test_a_missing_key_reads_as_none(adapter: Adapter) -> None:
    assert adapter.raw.get("raw/never-stored.json") is None
    adapter.raw.put_new([obj("raw/abc.json", b"abc")])
    # A prefix or an extension of a stored key is a different key.
    assert adapter.raw.get("raw/abc") is None
    assert adapter.raw.get("raw/abc.json.bak") is None


def test_an_empty_put_does_nothing(adapter: Adapter) -> None:
    assert adapter.raw.put_new([]) == []


def test_arbitrary_bytes_round_trip_exactly(adapter: Adapter) -> None:
    # Not UTF-8, NULs, CRLF, and a body at the request limit: stored and returned byte for byte.
    samples = {
        "raw/binary.json": bytes(range(256)) * 3,
        "raw/crlf.json": b'{"a":1}\r\n\x00\xff\xfe',
        "raw/big.json": b"x" * (1024 * 1024),
        "raw/empty.json": b"",
    }
    puts = adapter.raw.put_new([obj(k, v) for k, v in samples.items()])
    assert all(p.status is RawPutStatus.CREATED for p in puts)
    for key, data in samples.items():
        assert adapter.raw.get(key) == data


def test_keys_that_look_alike_stay_distinct(adapter: Adapter) -> None:
    keys = ["raw/a", "raw/a/", "raw/a/b", "raw/A", "raw/a%", "raw/a_", "raw/a=b", "raw/../a", "raw/a#b"]
    adapter.raw.put_new([obj(k, k.encode()) for k in keys])
    for k in keys:
        assert adapter.raw.get(k) == k.encode()


def test_stored_bytes_survive_many_refused_overwrites(adapter: Adapter) -> None:
    adapter.raw.put_new([obj("raw/keep.json", b"original")])
    for i in range(5):
        [put] = adapter.raw.put_new([obj("raw/keep.json", f"attempt {i}".encode())])
        assert put.status is RawPutStatus.EXISTS
    assert adapter.raw.get("raw/keep.json") == b"original"
