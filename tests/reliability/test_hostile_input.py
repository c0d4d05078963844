"""Hostile input: every case of the corpus (``hostile_cases.py``) through the ingest Lambda handler on real
API Gateway events, and over HTTP through one real ``pik serve`` process; then hypothesis fuzzing of the
ingest request.

After every case: the answer is the one the corpus states (200 ACCEPTED, 400 REJECTED with a reason naming
the problem, 413 for a body over the limit), never a 5xx; an accepted event's bytes read back exactly and its
keys are built from its own fields; a rejected request is quarantined, bounded (at most
``QUARANTINE_MAX_BYTES`` kept) with the size and sha256 of the whole body; the counts moved by exactly the
case's effect; and the server still accepts a valid event. At the end, the stores are compared in full with
everything that was sent.

Besides: the same bodies sent to the replay endpoint (all 400, nothing sent), the key forging cases on AWS
(moto), where keys are strings joined with '#', and hypothesis fuzzing (near-valid events with hostile
fields, byte mutations, noise): never a 5xx, and every accepted body reads back identical.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import io
import json
import os
import shutil
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.handlers import ingest as ingest_handler
from backend.identity import canonical_json, event_id, sha256_hex
from backend.kit import Kit, open_local
from backend.ports import EventIndex, IndexStats, RawStore
from backend.services.ingest import MAX_REASON_CHARS, QUARANTINE_MAX_BYTES
from backend.times import fmt, parse_event_time
from tests.conftest import handlers_on_workspace, make_event
from tests.handlers.support import captured_logs
from tests.handlers.test_ingest_handler import FakeLambdaContext, http_v2_event, rest_v1_event
from tests.reliability.conftest import soak, soaking
from tests.reliability.hostile_cases import (
    ANSI,
    BIDI,
    CONTROLS,
    EMOJI,
    KEY_FORGING,
    MARKUP,
    Case,
    Expect,
    cases,
    per_category,
    per_outcome,
)
from tests.reliability.served import Served, serve_env, start_serve
from tests.test_serve import raw_exchange

TOKEN = "hostile-suite-token-" + "x" * 24


# -- what a store must hold -----------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


@dataclass
class Ledger:
    """Everything sent that the store must hold, and the counts it must show, kept case by case."""

    accepted: dict[str, bytes] = field(default_factory=dict)  # event_id -> the exact body
    rejections: list[tuple[str, bytes]] = field(default_factory=list)  # (rejection_id, the whole body)
    answers: Counter[int] = field(default_factory=Counter)

    def counts(self) -> tuple[int, int, int]:
        return len(self.accepted), 0, len(self.rejections)


def counts(stats: IndexStats) -> tuple[int, int, int]:
    return stats.accepted, stats.duplicate, stats.rejected


def check_case(
    case: Case,
    answer: Answer,
    raw: RawStore,
    index: EventIndex,
    ledger: Ledger,
    *,
    http: bool,
    counts_each: bool = True,
) -> None:
    """The answer is the case's, and the store holds exactly its effect (see the module docstring)."""
    what = f"{case.name}: got {answer.status} {json.dumps(answer.body)[:300]}"
    ledger.answers[answer.status] += 1
    assert answer.status < 500, what
    assert answer.status == case.status, what
    if http and case.over_api_limit:
        # Refused before any function runs, as API Gateway refuses it: nothing read, nothing stored.
        assert answer.body["status"] == 413 and "limit" in answer.body["error"], what
        assert counts(index.stats()) == ledger.counts(), what
        return
    if case.expect is Expect.ACCEPTED:
        check_accepted(case, answer, raw, index, what)
        ledger.accepted[answer.body["event_id"]] = case.body
    else:
        check_rejected(case, answer, index, what)
        ledger.rejections.append((answer.body["rejection_id"], case.body))
    if counts_each:
        assert counts(index.stats()) == ledger.counts(), what


def check_accepted(case: Case, answer: Answer, raw: RawStore, index: EventIndex, what: str) -> None:
    body = answer.body
    assert body["status"] == "ACCEPTED" and body["reason"] is None, what
    stored = case.stored
    # The identity and the key come from the event's own fields, as DESIGN defines them, never from an
    # extra field that claims to be one.
    event = json.loads(case.body)
    expected_id = event_id(
        stored["source"],
        stored["event_type"],
        stored["entity_id"],
        parse_event_time(event["event_time"]),
        sha256_hex(canonical_json(event["payload"])),
        stored.get("idempotency_key"),
    )
    assert body["event_id"] == expected_id, what
    day = stored["event_time"][:10]
    key = body["s3_key"]
    assert key.split("/") == [
        "raw",
        f"source={stored['source']}",
        f"event_type={stored['event_type']}",
        f"event_date={day}",
        f"event_id={expected_id}.json",
    ], what
    assert raw.get(key) == case.body, what  # byte for byte
    record = index.get_accepted(expected_id)
    assert record is not None, what
    held = {
        "source": record.source,
        "event_type": record.event_type,
        "entity_id": record.entity_id,
        "event_time": record.event_time,
    }
    if record.idempotency_key is not None:
        held["idempotency_key"] = record.idempotency_key
    assert held == stored, what
    assert (record.s3_key, record.raw_size, record.raw_sha) == (key, len(case.body), sha256_hex(case.body))
    assert body["event_time"] == stored["event_time"], what


def check_rejected(case: Case, answer: Answer, index: EventIndex, what: str) -> None:
    body = answer.body
    assert body["status"] == "REJECTED" and body["event_id"] is None, what
    reason = body["reason"]
    assert isinstance(reason, str) and case.reason in reason and len(reason) <= MAX_REASON_CHARS, what
    rejection = index.get_rejection(body["rejection_id"])
    assert rejection is not None, what
    # Quarantined, bounded: a prefix of at most QUARANTINE_MAX_BYTES, the size and sha256 of the whole.
    assert rejection.data == case.body[:QUARANTINE_MAX_BYTES], what
    assert len(rejection.data) <= QUARANTINE_MAX_BYTES, what
    assert (rejection.size, rejection.sha256) == (len(case.body), sha256_hex(case.body)), what
    assert rejection.truncated == (len(case.body) > QUARANTINE_MAX_BYTES), what
    assert (rejection.reason, rejection.origin) == (reason, "api"), what


def check_everything(raw: RawStore, index: EventIndex, ledger: Ledger) -> None:
    """The whole store against the ledger: every accepted body byte for byte, every rejection in order,
    and nothing else."""
    for eid, body in ledger.accepted.items():
        record = index.get_accepted(eid)
        assert record is not None and raw.get(record.s3_key) == body, eid
        assert [r.status.value for r in index.receipts(eid)] == ["ACCEPTED"], eid
    quarantined = []
    after = None
    while True:
        page = index.query_rejections(limit=500, after=after)
        quarantined += page.items
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert [(r.rejection_id, r.size, r.sha256) for r in quarantined] == [
        (rid, len(body), sha256_hex(body)) for rid, body in ledger.rejections
    ]
    assert [r.data for r in quarantined] == [body[:QUARANTINE_MAX_BYTES] for _, body in ledger.rejections]
    assert counts(index.stats()) == ledger.counts()


def canary(i: int) -> bytes:
    return make_event(entity_id=f"canary {i}", payload={"after": i})


def log_lines_are_text(text: str) -> int:
    """Every log line is one JSON object with no control or format character (ESC, bidi overrides):
    hostile data reaches logs escaped. Returns the number of lines."""
    lines = text.splitlines()
    for line in lines:
        json.loads(line)
        bad = [ch for ch in line if unicodedata.category(ch) in ("Cc", "Cf")]
        assert not bad, f"log line holds {bad!r}: {line[:300]}"
    return len(lines)


# -- where the workspaces live ------------------------------------------------------------------------------


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A folder for this suite's workspaces: in memory (/dev/shm) where the machine has one. The suite
    commits some 1,600 times; each commit's fsync is not what it tests, and on disk it doubles its time."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="pik-hostile-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def handled(scratch: Path) -> Iterator[Kit]:
    """A local workspace that the Lambda handlers run on (as the ``backend`` fixture, in ``scratch``)."""
    with handlers_on_workspace(scratch / "ws") as opened:
        yield opened


# -- (a) through the Lambda handler -----------------------------------------------------------------------


def invoke(body: bytes, i: int) -> Answer:
    """The ingest handler on an API Gateway event for ``body``: REST v1 and HTTP API v2 in turn, base64 when
    the bytes are not UTF-8 text (as API Gateway delivers a binary body)."""
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    shape = rest_v1_event if i % 2 == 0 else http_v2_event
    event = shape(text, base64_encoded=encoded, request_id=f"hostile-{i}")
    response = ingest_handler.handler(event, FakeLambdaContext())
    assert response["headers"]["Content-Type"] == "application/json"
    return Answer(response["statusCode"], json.loads(response["body"]))


def test_every_hostile_case_through_the_lambda_handler(
    handled: Kit, figures: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    backend = handled
    corpus = cases()
    ledger = Ledger()
    with captured_logs(ingest_handler.logger) as logs:
        for i, case in enumerate(corpus):
            check_case(case, invoke(case.body, i), backend.raw, backend.index, ledger, http=False)
            if i % 25 == 24:  # the function still accepts a valid event
                answer = invoke(canary(i), i)
                assert (answer.status, answer.body["status"]) == (200, "ACCEPTED"), case.name
                ledger.accepted[answer.body["event_id"]] = canary(i)
    check_everything(backend.raw, backend.index, ledger)
    log_count = log_lines_are_text(logs.getvalue())
    capsys.readouterr()  # the EMF metrics
    assert len(corpus) >= 300 and ledger.answers.keys() <= {200, 400, 413}
    figures(
        "handler_corpus",
        cases=len(corpus),
        by_category=per_category(),
        expected=per_outcome(),
        answers={str(k): v for k, v in sorted(ledger.answers.items())},
        answered_as_expected=len(corpus),
        server_errors_5xx=0,
        quarantined=len(ledger.rejections),
        accepted_byte_exact=len(ledger.accepted),
        log_lines_checked=log_count,
    )


def test_every_hostile_body_sent_to_the_replay_handler_is_a_400(
    handled: Kit, figures: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    """The same bodies on the other endpoint of the API: none is a replay request, and none may be a 5xx
    or send anything."""
    from backend.handlers import replay as replay_handler
    from tests.handlers.support import replay_v1

    answers: Counter[int] = Counter()
    with captured_logs(replay_handler.logger):
        for i, case in enumerate(cases()):
            try:
                event = replay_v1(case.body.decode("utf-8"), request_id=f"hostile-{i}")
            except UnicodeDecodeError:
                event = replay_v1(base64.b64encode(case.body).decode("ascii"), request_id=f"hostile-{i}")
                event["isBase64Encoded"] = True
            response = replay_handler.handler(event, FakeLambdaContext(function_name="pik-replay"))
            answers[response["statusCode"]] += 1
            reply = json.loads(response["body"])
            assert response["statusCode"] == 400 and reply["error"], (case.name, reply)
    capsys.readouterr()
    assert handled.queue is not None and handled.audit is not None
    assert handled.queue.depth().visible == 0 and handled.audit.query().items == []
    figures("replay_endpoint", cases=len(cases()), answers={str(k): v for k, v in answers.items()}, sent=0)


def test_key_forging_cases_through_the_lambda_handler_on_aws(
    figures: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    """On DynamoDB the keys are strings joined with '#' (``ENTITY#<id>``, ``TS#<time>#EID#<id>``, the lag
    index's ``SRC#...#TYPE#...``) and S3 keys paths: there, an entity such as ``ENTITY#someone_else`` or
    ``x#TS#...#EID#...`` must still be its own entity, found alone under its own key."""
    from backend.handlers import common
    from backend.settings import Settings
    from tests.aws_env import moto_backend, moto_kit

    # moto is slow: in CI the entity ids (they reach every DynamoDB key of an event); under soak, every key
    # and field forging case.
    chosen = tuple(
        c
        for c in cases()
        if c.category in ("key_forging", "field_forging") and (soaking() or "/entity_id/" in c.name)
    )
    store, aws, close = moto_backend()
    common.configure(moto_kit(store, aws, close), Settings(backend="aws"))
    ledger = Ledger()
    try:
        with captured_logs(ingest_handler.logger):
            for i, case in enumerate(chosen):
                # The counts are checked once, at the end: a DynamoDB scan per case would cost more than
                # the whole CI budget of this test.
                check_case(case, invoke(case.body, i), store, store, ledger, http=False, counts_each=False)
        check_everything(store, store, ledger)
        for eid in ledger.accepted:
            record = store.get_accepted(eid)
            assert record is not None
            start = parse_event_time(record.event_time)
            page = store.query_entity(
                record.entity_id, fmt(start), fmt(start + timedelta(milliseconds=1)), limit=10
            )
            assert [(r.event_id, r.entity_id) for r in page.items] == [(eid, record.entity_id)]
    finally:
        common.configure(None)
        close()
    capsys.readouterr()
    figures(
        "aws_key_forging",
        cases=len(chosen),
        accepted=len(ledger.accepted),
        rejected=len(ledger.rejections),
        found_alone_under_own_key=len(ledger.accepted),
        server_errors_5xx=0,
    )


# -- (b) over HTTP through `pik serve` ----------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, scratch: Path) -> Iterator[Served]:
    server = start_serve(
        tmp_path, "--port", "0", "--workspace", str(scratch / "ws"), env=serve_env(PIK_SERVE_TOKEN=TOKEN)
    )
    server.workspace = scratch / "ws"
    try:
        yield server
    finally:
        server.stop()


def post(port: int, body: bytes, token: str | None = TOKEN) -> Answer:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/ingest", body=body, headers=headers)
        response = conn.getresponse()
        return Answer(response.status, json.loads(response.read()))
    finally:
        conn.close()


def post_over_api_limit(port: int, body: bytes) -> Answer:
    """Send the headers and the first bytes of a body over API Gateway's limit and read the answer, which
    comes without the server reading the rest."""
    head = (
        f"POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    status, _, answer = raw_exchange(port, head + body[:65536])
    return Answer(status, answer)


def test_every_hostile_case_over_http_through_pik_serve(served: Served, figures: Callable[..., None]) -> None:
    corpus = cases()
    ledger = Ledger()
    assert served.workspace is not None
    store = open_local(served.workspace, create=False, read_only=True)
    try:
        for i, case in enumerate(corpus):
            send = post_over_api_limit if case.over_api_limit else post
            check_case(case, send(served.port, case.body), store.raw, store.index, ledger, http=True)
            # The server still serves: a valid event right after every case is accepted.
            answer = post(served.port, canary(i))
            assert (answer.status, answer.body["status"]) == (200, "ACCEPTED"), case.name
            ledger.accepted[answer.body["event_id"]] = canary(i)
        assert served.proc.poll() is None, "pik serve died"
        check_everything(store.raw, store.index, ledger)
    finally:
        store.close()
    assert served.stop() == 0
    output = served.output()
    assert TOKEN not in output and "Traceback" not in output
    assert ledger.answers.keys() <= {200, 400, 413}
    refused_unread = sum(case.over_api_limit for case in corpus)
    figures(
        "http_corpus",
        cases=len(corpus),
        by_category=per_category(),
        expected=per_outcome(),
        answers={str(k): v for k, v in sorted(ledger.answers.items())},
        answered_as_expected=len(corpus),
        server_errors_5xx=0,
        refused_unread_over_10MiB=refused_unread,
        quarantined=len(ledger.rejections),
        accepted_byte_exact=len(ledger.accepted),
        valid_events_after_a_case=len(corpus),
        server_alive_at_end=True,
    )


# -- hypothesis: near-valid events, mutated ----------------------------------------------------------------

HOSTILE_TEXT = [*CONTROLS.values(), *KEY_FORGING.values(), *MARKUP.values(), *ANSI.values(), *BIDI.values()]
HOSTILE_TEXT += [*EMOJI.values(), "", "a" * 129, "a" * 257, "\ud800", "2025-12-28T23:59:60Z", "|"]
TIMES = [
    "2025-12-28T23:59:59Z",
    "2025-12-28T23:59:59+14:00",
    "2025-12-28T23:59:59",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-14:00",
    "2025-12-28T23:59:59Z\x00x",
]


def json_values(finite: bool) -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(allow_nan=not finite, allow_infinity=not finite),
        st.text(max_size=30),
        st.sampled_from(HOSTILE_TEXT),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )


NAMES = st.from_regex(r"[A-Za-z0-9_.:\-]{1,20}", fullmatch=True)
VALID = {
    "source": NAMES,
    "event_type": NAMES,
    "entity_id": st.text(min_size=1, max_size=40).filter(
        lambda t: not any(0x7F <= ord(c) <= 0x9F or c < " " for c in t)
    ),
    "event_time": st.sampled_from(TIMES[:3]),
    "payload": st.dictionaries(st.text(max_size=8), json_values(finite=True), max_size=5),
    "idempotency_key": st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True),
    "note": json_values(finite=True),
}
HOSTILE = st.one_of(
    st.sampled_from(HOSTILE_TEXT), st.sampled_from(TIMES), st.text(max_size=40), json_values(finite=False)
)


@st.composite
def request_bodies(draw: st.DrawFn) -> bytes:
    """A valid event (with or without an idempotency key and an unknown field) with, most of the time, one
    or two fields replaced by hostile values, and perhaps one left out, rendered as JSON; a third of them
    then mutated byte-wise (flips, inserts, deletions, truncation); one in ten is raw noise instead."""
    # sampled_from draws uniformly; integers() would favour 0 and the bounds.
    if draw(st.sampled_from(["event"] * 9 + ["noise"])) == "noise":
        return draw(st.binary(max_size=300))
    names = ["source", "event_type", "entity_id", "event_time", "payload"]
    names += [n for n in ("idempotency_key", "note") if draw(st.booleans())]
    event = {name: draw(VALID[name]) for name in names}
    for _ in range(draw(st.sampled_from([0, 1, 1, 2]))):
        event[draw(st.sampled_from(names))] = draw(HOSTILE)
    if draw(st.sampled_from(["keep"] * 9 + ["drop"])) == "drop":
        del event[draw(st.sampled_from(names))]
    text = json.dumps(event, ensure_ascii=draw(st.booleans()), allow_nan=True)
    body = text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8
    if draw(st.sampled_from(["as is", "as is", "mutated"])) == "mutated":
        for _ in range(draw(st.integers(1, 3))):
            if not body:
                break
            at = draw(st.integers(0, len(body) - 1))
            match draw(st.sampled_from(["flip", "insert", "delete", "truncate"])):
                case "flip":
                    body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
                case "insert":
                    body = body[:at] + draw(st.binary(min_size=1, max_size=4)) + body[at:]
                case "delete":
                    body = body[:at] + body[at + 1 :]
                case "truncate":
                    body = body[:at]
    return body


def test_fuzzed_ingest_requests_are_answered_never_a_5xx(handled: Kit, figures: Callable[..., None]) -> None:
    backend = handled
    seen: Counter[str] = Counter()

    @settings(max_examples=soak(200, 5000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=request_bodies(), shape=st.integers(0, 1))
    def one(body: bytes, shape: int) -> None:
        with captured_logs(ingest_handler.logger), contextlib.redirect_stdout(io.StringIO()):
            answer = invoke(body, shape)
        seen[str(answer.status)] += 1
        assert answer.status in (200, 400, 413), (answer.status, answer.body)
        status = answer.body["status"]
        seen[status] += 1
        if answer.status == 200:
            assert status in ("ACCEPTED", "DUPLICATE")
            # This receipt's bytes, byte for byte (a duplicate with other bytes has its own key).
            assert backend.raw.get(answer.body["s3_key"]) == body
        else:
            assert status == "REJECTED" and answer.body["reason"] and answer.body["rejection_id"]
            rejection = backend.index.get_rejection(answer.body["rejection_id"])
            assert rejection is not None and rejection.sha256 == hashlib.sha256(body).hexdigest()

    one()
    assert counts(backend.index.stats()) == (seen["ACCEPTED"], seen["DUPLICATE"], seen["REJECTED"])
    figures(
        "fuzz",
        examples=sum(seen[k] for k in ("200", "400", "413")),
        accepted=seen["ACCEPTED"],
        duplicate=seen["DUPLICATE"],
        rejected=seen["REJECTED"],
        answers={k: seen[k] for k in ("200", "400", "413")},
        server_errors_5xx=0,
    )
