"""A corpus of hostile ingest request bodies, each with the answer the kit owes it.

Built systematically: for each category of attack, each field it can reach, each variant. Some of these
are *valid* events (an emoji entity id, Rich markup in a payload, a ``+14:00`` offset, a time without a
zone, which DESIGN reads as UTC): those must be ACCEPTED with their bytes stored exactly and their keys built
from their own fields, never forged. The invalid ones must be REJECTED (400) with a reason naming what is
wrong, or refused for their size (413), and quarantined.

Where a case's answer follows from a rule of DESIGN rather than being listed by hand (may this string be an
``entity_id``?), :func:`string_outcome` states the rule from DESIGN's words (invariant 8, the event model),
independently of how ``backend/model.py`` writes it, so that the two check each other.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any

from backend.model import MAX_BODY_BYTES, MAX_NESTING, MAX_PAYLOAD_BYTES
from pik_console.http_api import MAX_STREAMED_BYTES


class Expect(StrEnum):
    ACCEPTED = "ACCEPTED"  # 200, stored byte for byte
    REJECTED = "REJECTED"  # 400 with a reason, quarantined
    TOO_LARGE = "TOO_LARGE"  # 413 REJECTED, a bounded prefix quarantined with the whole size and sha256


STATUS = {Expect.ACCEPTED: 200, Expect.REJECTED: 400, Expect.TOO_LARGE: 413}

EVENT_TIME = "2025-12-28T23:59:59Z"
STORED_TIME = "2025-12-28T23:59:59.000Z"


@dataclass(frozen=True)
class Case:
    """One hostile request body and what the kit must answer.

    ``reason`` is a substring of the REJECTED reason. ``stored`` holds, for an ACCEPTED case, the fields the
    index must hold for it exactly (``source``, ``event_type``, ``entity_id``, ``event_time``, and
    ``idempotency_key`` when one was sent).
    """

    name: str
    category: str
    body: bytes
    expect: Expect
    reason: str = ""
    stored: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> int:
        return STATUS[self.expect]

    @property
    def over_api_limit(self) -> bool:
        """Over API Gateway's own limit: ``pik serve`` refuses it unread (413), as API Gateway would."""
        return len(self.body) > MAX_STREAMED_BYTES


# -- building bodies --------------------------------------------------------------------------------------


def base(name: str) -> dict[str, Any]:
    """A valid event unique to the case (its entity and payload name it)."""
    return {
        "source": "hostile",
        "event_type": "probe",
        "entity_id": f"case {name}",
        "event_time": EVENT_TIME,
        "payload": {"case": name},
    }


def render(obj: dict[str, Any], raw: dict[str, bytes] | None = None, tail: bytes = b"") -> bytes:
    """``obj`` as UTF-8 JSON; each ``raw`` field's value is spliced in as the given bytes (invalid JSON,
    invalid UTF-8, deep nesting...), and ``tail`` goes before the closing brace (duplicate keys)."""
    raw = raw or {}
    placeholders = {name: f"@@raw-{name}@@" for name in raw}
    body = json.dumps({**obj, **placeholders}, ensure_ascii=False).encode("utf-8")
    for name, value in raw.items():
        body = body.replace(json.dumps(placeholders[name]).encode(), value)
    if tail:
        body = body[:-1] + tail + b"}"
    return body


def stored_of(obj: dict[str, Any], event_time: str = STORED_TIME) -> dict[str, Any]:
    out = {k: obj[k] for k in ("source", "event_type", "entity_id")}
    out["event_time"] = event_time
    if obj.get("idempotency_key") is not None:
        out["idempotency_key"] = obj["idempotency_key"]
    return out


def accepted(name: str, category: str, obj: dict[str, Any], **kw: Any) -> Case:
    raw = kw.pop("raw", None)
    stored = kw.pop("stored", None) or stored_of(obj, kw.pop("event_time", STORED_TIME))
    return Case(name, category, render(obj, raw), Expect.ACCEPTED, stored=stored)


def rejected(name: str, category: str, body: bytes, reason: str) -> Case:
    return Case(name, category, body, Expect.REJECTED, reason)


# -- the rules, in DESIGN's words -------------------------------------------------------------------------

NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")  # DESIGN invariant 8: source and event_type


def _control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def _surrogate(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


# Where a hostile string can be put, and how.
FIELDS = (
    "source",
    "event_type",
    "entity_id",
    "event_time",
    "idempotency_key",
    "payload",
    "payload-key",
    "extra",
)


def place(name: str, where: str, value: str) -> dict[str, Any]:
    """The case's event with ``value`` in ``where`` (``payload``: a payload value; ``payload-key``: a payload
    key; ``extra``: an unknown top-level field)."""
    obj = base(name)
    if where == "payload":
        obj["payload"] = {"case": name, "text": value}
    elif where == "payload-key":
        obj["payload"] = {"case": name, value: 1}
    elif where == "extra":
        obj["note"] = value
    else:
        obj[where] = value
    return obj


def string_outcome(where: str, value: str) -> tuple[Expect, str]:
    """What DESIGN says of ``value`` in ``where``: ACCEPTED, or REJECTED with a reason substring."""
    if where in ("source", "event_type"):
        ok = NAME.fullmatch(value) is not None
        return (Expect.ACCEPTED, "") if ok else (Expect.REJECTED, f"{where}: must be 1-128 characters")
    if where == "event_time":
        return Expect.REJECTED, f"event_time {value[:64]!r}"  # none of the hostile strings is a time
    if where in ("payload", "payload-key"):
        if _surrogate(value):
            return Expect.REJECTED, "payload: contains an unpaired surrogate"
        return Expect.ACCEPTED, ""  # a payload holds any text
    if where == "extra":
        return Expect.ACCEPTED, ""  # unknown fields stay in the raw bytes, unread
    # entity_id: 1-256 characters, no control characters; idempotency_key: the same and no '|'.
    if _surrogate(value):
        return Expect.REJECTED, f"{where}: contains an unpaired surrogate"
    ok = 1 <= len(value) <= 256 and not _control(value)
    if where == "idempotency_key":
        ok = ok and "|" not in value
    return (Expect.ACCEPTED, "") if ok else (Expect.REJECTED, f"{where}: must be 1-256 characters")


def string_cases(category: str, variants: dict[str, str], fields: tuple[str, ...]) -> Iterator[Case]:
    """Each variant in each field, with the answer :func:`string_outcome` gives."""
    for variant, value in variants.items():
        for where in fields:
            name = f"{category}/{where}/{variant}"
            obj = place(name, where, value)
            expect, reason = string_outcome(where, value)
            if expect is Expect.ACCEPTED:
                yield accepted(name, category, obj)
            else:
                yield rejected(name, category, render(obj), reason)


# -- the categories ---------------------------------------------------------------------------------------


def invalid_json() -> Iterator[Case]:
    cat = "invalid_json"
    whole = render(base(f"{cat}/whole"))
    for i in range(1, 11):  # truncated at 10 points, from the first bytes to the last but a few
        cut = max(1, len(whole) * i // 11)
        yield rejected(f"{cat}/truncated/{cut}-of-{len(whole)}", cat, whole[:cut], "invalid JSON")
    good = render(base(f"{cat}/good"))
    plain: dict[str, tuple[bytes, str]] = {
        "empty": (b"", "blank"),
        "whitespace": (b" \r\n\t ", "blank"),
        "open-brace": (b"{", "invalid JSON"),
        "close-brace": (b"}", "invalid JSON"),
        "null": (b"null", "must be a JSON object, got a JSON null"),
        "true": (b"true", "must be a JSON object, got a JSON boolean"),
        "number": (b"42", "must be a JSON object, got a JSON number"),
        "string": (b'"an event"', "must be a JSON object, got a JSON string"),
        "empty-array": (b"[]", "must be a JSON object, got a JSON array"),
        "event-in-array": (b"[" + good + b"]", "must be a JSON object, got a JSON array"),
        "trailing-garbage": (good + b"x", "invalid JSON: Extra data"),
        "two-objects": (good + good, "invalid JSON: Extra data"),
        "json-lines": (good + b"\n" + good, "invalid JSON: Extra data"),
        "trailing-nul": (good + b"\x00", "invalid JSON: Extra data"),
        "single-quotes": (good.replace(b'"', b"'"), "invalid JSON"),
        "trailing-comma": (good[:-1] + b",}", "invalid JSON"),
        "block-comment": (b"/* c */" + good, "invalid JSON"),
        "line-comment": (good[:-1] + b"// c\n}", "invalid JSON"),
        "unquoted-keys": (good.replace(b'"source"', b"source"), "invalid JSON"),
        "byte-order-mark": (b"\xef\xbb\xbf" + good, "byte order mark"),
        "hex-number": (render(base(f"{cat}/hex"), {"payload": b'{"n": 0x10}'}), "invalid JSON"),
        "leading-zero": (render(base(f"{cat}/zero"), {"payload": b'{"n": 007}'}), "invalid JSON"),
        "plus-sign": (render(base(f"{cat}/plus"), {"payload": b'{"n": +1}'}), "invalid JSON"),
        "bare-fraction": (render(base(f"{cat}/frac"), {"payload": b'{"n": .5}'}), "invalid JSON"),
        "python-true": (render(base(f"{cat}/py"), {"payload": b'{"b": True}'}), "invalid JSON"),
        "undefined": (render(base(f"{cat}/undef"), {"payload": b'{"u": undefined}'}), "invalid JSON"),
        "unterminated-string": (good[:-3], "invalid JSON"),
        "bad-escape": (render(base(f"{cat}/esc"), {"payload": b'{"s": "\\x41"}'}), "invalid JSON"),
        "short-unicode-escape": (render(base(f"{cat}/u"), {"payload": b'{"s": "\\u12"}'}), "invalid JSON"),
        "integer-over-4300-digits": (
            render(base(f"{cat}/int"), {"payload": b'{"n": ' + b"7" * 5000 + b"}"}),
            "invalid JSON: Exceeds the limit (4300 digits)",
        ),
    }
    for variant, (body, reason) in plain.items():
        yield rejected(f"{cat}/{variant}", cat, body, reason)


WRONG_VALUES: dict[str, Any] = {
    "null": None,
    "false": False,
    "zero": 0,
    "float": 3.14,
    "empty-array": [],
    "empty-object": {},
    "array-of-string": ["demo"],
    "object": {"value": "demo"},
}


def wrong_types() -> Iterator[Case]:
    cat = "wrong_type"
    for where in ("source", "event_type", "entity_id", "event_time", "idempotency_key"):
        for variant, value in WRONG_VALUES.items():
            name = f"{cat}/{where}/{variant}"
            obj = {**base(name), where: value}
            if where == "idempotency_key" and value is None:
                yield accepted(name, cat, obj)  # null is "no key", as when it is left out
            else:
                yield rejected(name, cat, render(obj), f"{where}: must be a string")
    for variant, value in {
        "null": None,
        "false": False,
        "number": 10,
        "string": "steps=10",
        "empty-string": "",
    }.items():
        name = f"{cat}/payload/{variant}"
        yield rejected(
            name, cat, render({**base(name), "payload": value}), "payload: must be a JSON object or array"
        )
    for variant, value in {"empty-array": [], "empty-object": {}, "array": [1, "two", None]}.items():
        name = f"{cat}/payload/{variant}"
        yield accepted(name, cat, {**base(name), "payload": value})  # an object or an array, however small


def missing_fields() -> Iterator[Case]:
    cat = "missing"
    for where in ("source", "event_type", "entity_id", "event_time", "payload"):
        name = f"{cat}/{where}"
        obj = base(name)
        del obj[where]
        yield rejected(name, cat, render(obj), f"{where}: required field is missing")
    yield rejected(f"{cat}/all", cat, b"{}", "source: required field is missing")
    name = f"{cat}/source-misspelt"
    obj = base(name)
    obj["Source"] = obj.pop("source")
    yield rejected(name, cat, render(obj), "source: required field is missing")
    name = f"{cat}/idempotency_key"  # optional: leaving it out is the normal case
    yield accepted(name, cat, base(name))


def limits() -> Iterator[Case]:
    cat = "limits"

    def sized(where: str, variant: str, value: str) -> Case:
        name = f"{cat}/{where}/{variant}"
        obj = {**base(name), where: value}
        expect, reason = string_outcome(where, value)
        return (
            accepted(name, cat, obj)
            if expect is Expect.ACCEPTED
            else rejected(name, cat, render(obj), reason)
        )

    for where, top in (("source", 128), ("event_type", 128), ("entity_id", 256), ("idempotency_key", 256)):
        yield sized(where, f"{top}-chars", "a" * top)
        yield sized(where, f"{top + 1}-chars", "a" * (top + 1))
        yield sized(where, "empty", "")
    yield sized("entity_id", "256-emoji", "🔥" * 256)  # 1,024 bytes: the limit counts characters
    yield sized("entity_id", "257-emoji", "🔥" * 257)
    yield sized("idempotency_key", "256-cjk", "鍵" * 256)

    # The payload limit is on its canonical JSON (sorted keys, no spaces, UTF-8).
    def payload_of(size: int, char: str = "x") -> dict[str, Any]:
        overhead = len(json.dumps({"p": ""}, separators=(",", ":")).encode())
        return {"p": char * ((size - overhead) // len(char.encode()))}

    name = f"{cat}/payload/at-256KiB"
    yield accepted(name, cat, {**base(name), "payload": payload_of(MAX_PAYLOAD_BYTES)})
    name = f"{cat}/payload/256KiB-plus-1"
    obj = {**base(name), "payload": payload_of(MAX_PAYLOAD_BYTES + 1)}
    yield rejected(name, cat, render(obj), f"payload: {MAX_PAYLOAD_BYTES + 1:,} bytes as canonical JSON")
    name = f"{cat}/payload/multibyte-over"  # fewer characters than the limit, more bytes
    obj = {**base(name), "payload": payload_of(MAX_PAYLOAD_BYTES + 3, "é")}
    yield rejected(name, cat, render(obj), "the limit is 262,144 bytes")
    name = f"{cat}/payload/spaced-out-under"  # over the limit as sent, under it as canonical JSON
    spaced = {**base(name), "payload": {f"k{i:05}": i for i in range(15_000)}}
    body = json.dumps(spaced, indent=8).encode()
    assert len(body) > MAX_PAYLOAD_BYTES
    yield Case(name, cat, body, Expect.ACCEPTED, stored=stored_of(spaced))
    name = f"{cat}/payload/escapes-under"  # \\u escapes: 6 bytes sent, 2 as canonical UTF-8
    escaped = {**base(name), "payload": {"p": "é" * 100_000}}
    body = json.dumps(escaped, ensure_ascii=True).encode()
    assert len(body) > 2 * MAX_PAYLOAD_BYTES
    yield Case(name, cat, body, Expect.ACCEPTED, stored=stored_of(escaped))

    # The body limit (1 MiB), then API Gateway's (10 MiB).
    name = f"{cat}/body/at-1MiB"
    obj = base(name)
    short = render(obj)
    yield Case(
        name,
        cat,
        short[:-1] + b" " * (MAX_BODY_BYTES - len(short)) + b"}",
        Expect.ACCEPTED,
        stored=stored_of(obj),
    )
    too_large = f"the limit is {MAX_BODY_BYTES:,} bytes"
    for variant, body in {
        "1MiB-plus-1": short[:-1] + b" " * (MAX_BODY_BYTES - len(short) + 1) + b"}",
        "1MiB-plus-1-invalid-json": b"{" * (MAX_BODY_BYTES + 1),
        "1MiB-plus-1-not-utf8": b"\xff" * (MAX_BODY_BYTES + 1),
        "2MiB-payload": render({**base(f"{cat}/2MiB"), "payload": {"blob": "y" * (2 * MAX_BODY_BYTES)}}),
        "10MiB": b"[" + b" " * (MAX_STREAMED_BYTES - 2) + b"]",
        "10MiB-plus-1": b"[" + b" " * (MAX_STREAMED_BYTES - 1) + b"]",
    }.items():
        yield Case(f"{cat}/body/{variant}", cat, body, Expect.TOO_LARGE, too_large)


def nesting() -> Iterator[Case]:
    cat = "nesting"
    deep = "nested too deeply"

    def arrays(n: int) -> bytes:
        return b"[" * n + b"]" * n

    def objects(n: int) -> bytes:
        return b'{"a":' * (n - 1) + b"{}" + b"}" * (n - 1)

    def mixed(n: int) -> bytes:
        return b'[{"a":' * (n // 2) + b"1" + b"}]" * (n // 2)

    for shape, make in (("arrays", arrays), ("objects", objects), ("mixed", mixed)):
        yield rejected(
            f"{cat}/payload/10000-{shape}", cat, render(base("n"), {"payload": make(10_000)}), deep
        )
    name = f"{cat}/payload/{MAX_NESTING - 1}-arrays"  # the event is level 1: the payload may nest 127
    yield accepted(name, cat, base(name), raw={"payload": arrays(MAX_NESTING - 1)})
    name = f"{cat}/payload/{MAX_NESTING - 1}-objects"
    yield accepted(name, cat, base(name), raw={"payload": objects(MAX_NESTING - 1)})
    for n in (MAX_NESTING, 990, 1000):  # past the bound; around where Python's own reader gives up
        yield rejected(f"{cat}/payload/{n}-arrays", cat, render(base("n"), {"payload": arrays(n)}), deep)
    for where in ("source", "entity_id", "event_time", "extra"):
        obj = base(f"{cat}/{where}")
        target = "note" if where == "extra" else where
        obj[target] = None
        yield rejected(f"{cat}/{where}/10000-arrays", cat, render(obj, {target: arrays(10_000)}), deep)
    yield rejected(f"{cat}/document/10000-arrays", cat, arrays(10_000), deep)
    yield rejected(f"{cat}/document/10000-unclosed", cat, b"[" * 10_000, deep)
    yield rejected(f"{cat}/document/1MiB-of-brackets", cat, b"[" * (MAX_BODY_BYTES - 1), deep)


NOT_UTF8: dict[str, bytes] = {
    "ff": b"\xff",
    "truncated-2-byte": b"\xc3",
    "overlong-slash": b"\xc0\xaf",
    "encoded-surrogate": b"\xed\xa0\x80",
    "beyond-10ffff": b"\xf4\x90\x80\x80",
    "latin-1": b"caf\xe9",
}


def non_utf8() -> Iterator[Case]:
    cat = "non_utf8"
    for variant, seq in NOT_UTF8.items():
        for where in ("source", "entity_id", "event_time", "payload", "extra"):
            name = f"{cat}/{where}/{variant}"
            obj = place(name, where, "@@bytes@@")
            body = render(obj).replace(b"@@bytes@@", b"a" + seq + b"b")
            yield rejected(name, cat, body, "not UTF-8 text: invalid byte")
    for encoding in ("utf-16", "utf-16-be", "utf-32", "latin-1", "cp1252"):
        text = json.dumps({**base(f"{cat}/{encoding}"), "entity_id": "café"}, ensure_ascii=False)
        yield rejected(f"{cat}/body/{encoding}", cat, text.encode(encoding), "not UTF-8 text")
    # ASCII text in UTF-16 without a byte order mark is valid UTF-8 (letters and NULs), but not JSON.
    text = json.dumps(base(f"{cat}/utf-16-le-ascii"))
    yield rejected(f"{cat}/body/utf-16-le-ascii", cat, text.encode("utf-16-le"), "invalid JSON")
    # Valid UTF-8 text whose JSON escapes decode to lone surrogates, which are not Unicode text.
    for variant, escape in {
        "high": b"\\ud800",
        "low": b"\\udfff",
        "reversed-pair": b"\\udc00\\ud800",
    }.items():
        for where in ("source", "entity_id", "idempotency_key", "payload", "payload-key", "extra"):
            name = f"{cat}/{where}/lone-surrogate-{variant}"
            obj = place(name, where, "@@esc@@")
            body = render(obj).replace(b"@@esc@@", b"a" + escape + b"b")
            if where == "extra":  # unknown fields are kept as sent and never read
                yield Case(name, cat, body, Expect.ACCEPTED, stored=stored_of(obj))
            else:
                field_name = "payload" if where.startswith("payload") else where
                yield rejected(name, cat, body, f"{field_name}: contains an unpaired surrogate")


CONTROLS = {
    "nul": "\x00",
    "tab": "\t",
    "lf": "\n",
    "esc": "\x1b",
    "del": "\x7f",
    "nel-c1": "\x85",
    "csi-c1": "\x9b",
}


def controls() -> Iterator[Case]:
    cat = "control"
    variants = {name: f"a{ch}b" for name, ch in CONTROLS.items()}
    # event_type follows the rule of source, a payload key that of a payload value: both are covered.
    yield from string_cases(cat, variants, tuple(f for f in FIELDS if f not in ("event_type", "payload-key")))
    # Unescaped, a control character inside a JSON string is not JSON at all.
    for variant, byte in (("nul", b"\x00"), ("lf", b"\n"), ("esc", b"\x1b")):
        for where in ("entity_id", "payload"):
            name = f"{cat}/{where}/raw-{variant}"
            body = render(place(name, where, "@@ctl@@")).replace(b"@@ctl@@", b"a" + byte + b"b")
            yield rejected(name, cat, body, "invalid JSON: Invalid control character")


KEY_FORGING = {
    "hash": "a#b",
    "hash-only": "#",
    "entity-key": "ENTITY#someone_else",
    "sort-key": "x#TS#2025-12-28T23:59:59.000Z#EID#" + "0" * 64,
    "gsi-key": "SRC#demo#TYPE#heartbeat#DAY#2025-12-28",
    "lag-key": "LAG#00000000000000000001",
    "slash": "a/b",
    "slash-only": "/",
    "dotdot": "..",
    "dot": ".",
    "dotdot-path": "../../etc/passwd",
    "equals": "a=b",
    "partition": "x/event_type=forged",
    "raw-key": "raw/source=demo/event_type=heartbeat/event_date=2025-12-28/event_id=" + "0" * 64 + ".json",
    "percent-encoded": "a%2Fb",
    "backslash": "a\\b",
    "pipe": "a|b",
    "identity-suffix": "x|2025-12-28T23:59:59Z|" + "0" * 64,
    "colons-and-dots": "a:b.c-d_e",
}


def key_forging() -> Iterator[Case]:
    yield from string_cases(
        "key_forging", KEY_FORGING, ("source", "event_type", "entity_id", "idempotency_key")
    )


MARKUP = {
    "bold": "[bold red]ALARM[/]",
    "close-tag": "[/]",
    "link": "[link=https://evil.example]click[/link]",
    "reverse": "[reverse blink]x[/reverse blink]",
    "emoji-code": ":skull:",
    "escaped": "\\[not markup]",
    "brackets": "[[bold]]",
}


def markup() -> Iterator[Case]:
    yield from string_cases("markup", MARKUP, ("source", "entity_id", "idempotency_key", "payload"))


ANSI = {
    "sgr-red": "\x1b[31mred\x1b[0m",
    "clear-screen": "\x1b[2J\x1b[H",
    "window-title": "\x1b]0;pwned\x07",
    "cursor-up": "\x1b[1A\x1b[2K",
    "c1-csi": "\x9b31m",
    "hyperlink": "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\",
}


def ansi() -> Iterator[Case]:
    yield from string_cases("ansi", ANSI, ("source", "entity_id", "event_time", "payload"))


BIDI = {
    "rlo": "user_\u202e321",
    "lro": "\u202dabc",
    "rle": "\u202bx\u202c",
    "rli-pdi": "\u2067x\u2069",
    "lrm": "a\u200eb",
    "rlm": "a\u200fb",
    "arabic-mark": "a\u061cb",
    "zero-width-space": "a\u200bb",
    "bom-inside": "a\ufeffb",
    "line-separator": "a\u2028b",
}


def bidi() -> Iterator[Case]:
    # Format characters are not control characters: accepted, and shown escaped (pik_console.text.safe).
    yield from string_cases("bidi", BIDI, ("source", "entity_id", "payload"))


EMOJI = {
    "fire": "🔥",
    "family-zwj": "👩\u200d👩\u200d👧\u200d👦",
    "flag": "🇺🇳",
    "rainbow-flag": "🏳️\u200d🌈",
    "skin-tone": "👍🏽",
    "keycap": "1\ufe0f\u20e3",
    "combining-accent": "e\u0301",  # not normalized: stored as sent
    "cjk": "漢字",
    "arabic": "مرحبا",
}


def emoji() -> Iterator[Case]:
    cat = "emoji"
    yield from string_cases(cat, EMOJI, ("source", "entity_id", "event_time", "payload"))
    # A surrogate pair written as escapes is one character: the same entity as the character itself.
    name = f"{cat}/entity_id/escaped-pair"
    obj = base(name)
    body = render({**obj, "entity_id": "@@pair@@"}).replace(b"@@pair@@", b"\\ud83d\\udd25 " + name.encode())
    yield Case(name, cat, body, Expect.ACCEPTED, stored={**stored_of(obj), "entity_id": f"🔥 {name}"})


# (variant, event_time, stored UTC time or None, reason substring when rejected)
TIMES: list[tuple[str, str, str | None, str]] = [
    ("year-0001", "0001-01-01T00:00:00Z", None, "outside the supported range"),
    ("year-9999", "9999-12-31T23:59:59Z", None, "outside the supported range"),
    ("year-0000", "0000-01-01T00:00:00Z", None, "is not a valid ISO-8601 date-time"),
    ("year-9999-minus-14h", "9999-12-31T23:59:59.999999-14:00", None, "out of range once converted to UTC"),
    ("year-0001-plus-14h", "0001-01-01T00:00:00+14:00", None, "out of range once converted to UTC"),
    ("before-1970", "1969-12-31T23:59:59.999Z", None, "outside the supported range"),
    ("epoch", "1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z", ""),
    ("epoch-plus-1min-offset", "1970-01-01T00:00:00+00:01", None, "outside the supported range"),
    ("last-ms-before-2100", "2099-12-31T23:59:59.999Z", "2099-12-31T23:59:59.999Z", ""),
    ("year-2100", "2100-01-01T00:00:00Z", None, "outside the supported range"),
    ("year-2100-in-plus-1min", "2100-01-01T00:00:00+00:01", "2099-12-31T23:59:00.000Z", ""),
    ("leap-second", "2016-12-31T23:59:60Z", None, "second must be in 0..59"),
    ("second-60", "2025-12-28T23:59:60Z", None, "second must be in 0..59"),
    ("hour-24", "2025-12-28T24:00:00Z", None, "hour must be in 0..23"),
    ("plus-14h", "2025-12-28T23:59:59+14:00", "2025-12-28T09:59:59.000Z", ""),
    ("minus-14h", "2025-12-28T23:59:59-14:00", "2025-12-29T13:59:59.000Z", ""),
    # RFC 3339 allows offsets to +-23:59; no zone uses them today, but they are unambiguous.
    ("plus-14h01", "2025-12-28T23:59:59+14:01", "2025-12-28T09:58:59.000Z", ""),
    ("minus-23h59", "2025-12-28T23:59:59-23:59", "2025-12-29T23:58:59.000Z", ""),
    ("plus-24h", "2025-12-28T23:59:59+24:00", None, "is not a valid ISO-8601 date-time"),
    ("plus-99h", "2025-12-28T23:59:59+99:00", None, "is not a valid ISO-8601 date-time"),
    ("offset-with-seconds", "2025-12-28T23:59:59+05:30:15", "2025-12-28T18:29:44.000Z", ""),
    ("offset-basic-form", "2025-12-28T23:59:59+0530", "2025-12-28T18:29:59.000Z", ""),
    ("no-timezone", "2025-12-28T23:59:59", STORED_TIME, ""),  # naive = UTC
    ("no-timezone-space", "2025-12-28 23:59:59", STORED_TIME, ""),
    ("no-seconds", "2025-12-28T23:59", "2025-12-28T23:59:00.000Z", ""),
    ("nanoseconds", "2025-12-28T23:59:59.123456789Z", "2025-12-28T23:59:59.123Z", ""),
    ("fraction-truncated", "2025-12-28T23:59:59.9999Z", "2025-12-28T23:59:59.999Z", ""),
    ("comma-fraction", "2025-12-28T23:59:59,5Z", "2025-12-28T23:59:59.500Z", ""),
    ("minus-zero", "2025-12-28T23:59:59-00:00", STORED_TIME, ""),
    ("leap-day", "2024-02-29T12:00:00Z", "2024-02-29T12:00:00.000Z", ""),
    ("not-leap-day", "2025-02-29T12:00:00Z", None, "day is out of range"),
    ("month-13", "2025-13-01T00:00:00Z", None, "month must be in 1..12"),
    ("date-only", "2025-12-28", None, "with a clock time"),
    ("hour-only", "2025-12-28T23", None, "with a clock time"),
    ("lowercase-t", "2025-12-28t23:59:59Z", None, "with a clock time"),
    ("lowercase-z", "2025-12-28T23:59:59z", None, "is not a valid ISO-8601 date-time"),
    ("basic-form", "20251228T235959Z", None, "with a clock time"),
    ("epoch-seconds-text", "1766966399", None, "with a clock time"),
    ("words", "yesterday", None, "with a clock time"),
    ("empty", "", None, "with a clock time"),
    ("leading-space", " 2025-12-28T23:59:59Z", None, "with a clock time"),
    ("trailing-space", "2025-12-28T23:59:59Z ", None, "is not a valid ISO-8601 date-time"),
    ("fullwidth-digits", "２０２５-12-28T23:59:59Z", None, "other than ASCII"),
    ("nul-then-junk", "2025-12-28T23:59:59Z\x00junk", None, "other than ASCII"),
    ("nul-then-offset", "2025-12-28T23:59:59\x00+05:00", None, "other than ASCII"),
    ("100k-digits", "2025-12-28T23:59" + "9" * 100_000, None, "is not a valid ISO-8601 date-time"),
]


def times() -> Iterator[Case]:
    cat = "time"
    for variant, value, stored, reason in TIMES:
        name = f"{cat}/{variant}"
        obj = {**base(name), "event_time": value}
        if stored is not None:
            yield accepted(name, cat, obj, event_time=stored)
        else:
            yield rejected(name, cat, render(obj), reason)


def non_finite() -> Iterator[Case]:
    cat = "nan_infinity"
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        word = literal.decode()
        for where in ("payload", "nested", "event_time", "entity_id", "extra"):
            name = f"{cat}/{where}/{word}"
            obj = base(name)
            if where == "payload":
                raw = {"payload": b'{"v": ' + literal + b"}"}
            elif where == "nested":
                raw = {"payload": b'{"a": [1, {"v": ' + literal + b"}]}"}
            elif where == "extra":
                raw = {"note": literal}
            else:
                raw = {where: literal}
            yield rejected(name, cat, render(obj, raw), f"invalid JSON: {word} is not a JSON number")
    for literal in (b"1e999", b"-1e999"):
        name = f"{cat}/payload/{literal.decode()}"
        body = render(base(name), {"payload": b'{"v": ' + literal + b"}"})
        yield rejected(name, cat, body, "payload: numbers must be finite")
    # An unknown field is kept as sent and never read: a number Python reads as infinite is still JSON.
    name = f"{cat}/extra/1e999"
    yield accepted(name, cat, base(name), raw={"note": b"1e999"})


def duplicate_keys() -> Iterator[Case]:
    cat = "duplicate_keys"
    for where in ("source", "event_type", "entity_id", "event_time", "payload", "idempotency_key"):
        for variant, value in (("same-value", None), ("other-value", "evil")):
            name = f"{cat}/{where}/{variant}"
            obj = base(name)
            if where == "idempotency_key":
                obj[where] = "k1"
            again = obj[where] if value is None else value
            tail = b", " + json.dumps(where).encode() + b": " + json.dumps(again).encode()
            yield rejected(name, cat, render(obj, tail=tail), f"duplicate key '{where}'")
    name = f"{cat}/payload/nested"
    yield rejected(
        name, cat, render(base(name), {"payload": b'{"a": {"b": 1, "b": 2}}'}), "duplicate key 'b'"
    )
    name = f"{cat}/extra/nested"
    yield rejected(name, cat, render(base(name), {"note": b'[{"x": 1, "x": 1}]'}), "duplicate key 'x'")
    name = f"{cat}/source/escaped-spelling"  # the same key once its escapes are read
    yield rejected(name, cat, render(base(name), tail=b', "sour\\u0063e": "evil"'), "duplicate key 'source'")
    name = f"{cat}/source/other-case"  # "Source" is another key: an unknown field, kept as sent
    yield accepted(name, cat, {**base(name), "Source": "evil"})


def field_forging() -> Iterator[Case]:
    """Unknown fields named like the kit's own: kept in the raw bytes, never believed."""
    cat = "field_forging"
    for variant, extra in {
        "event_id": {"event_id": "0" * 64},
        "status": {"status": "DUPLICATE"},
        "s3_key": {"s3_key": "raw/source=demo/event_type=heartbeat/event_date=2025-12-28/event_id=x.json"},
        "ingest_time": {"ingest_time": "1970-01-01T00:00:00.000Z", "ingest_lag_ms": -1},
        "receipt": {"receipt": "0", "rejection_id": "1"},
        "proto": {"__proto__": {"admin": True}, "constructor": {"prototype": {}}},
        "day-hour": {"day": "1999-01-01", "hour": "99"},
    }.items():
        name = f"{cat}/{variant}"
        yield accepted(name, cat, {**base(name), **extra})


CATEGORIES = (
    invalid_json,
    wrong_types,
    missing_fields,
    limits,
    nesting,
    non_utf8,
    controls,
    key_forging,
    markup,
    ansi,
    bidi,
    emoji,
    times,
    non_finite,
    duplicate_keys,
    field_forging,
)


@cache
def cases() -> tuple[Case, ...]:
    """Every case, in a fixed order, names unique."""
    out = tuple(case for category in CATEGORIES for case in category())
    names = Counter(case.name for case in out)
    dupes = [name for name, n in names.items() if n > 1]
    assert not dupes, f"case names must be unique: {dupes}"
    return out


def per_category(selected: tuple[Case, ...] | None = None) -> dict[str, int]:
    return dict(Counter(case.category for case in (selected or cases())))


def per_outcome(selected: tuple[Case, ...] | None = None) -> dict[str, int]:
    return dict(Counter(case.expect.value for case in (selected or cases())))
