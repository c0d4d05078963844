"""Fault injection for the fault suite: seeded decisions, and where they are applied on each adapter.

* :class:`Faults` decides, from a seeded RNG, whether a store call fails and how: ``before`` (the call
  never reached the store: nothing happened) or ``after`` (the store did it, and the answer was lost on
  the way back). It counts what it was asked and what it injected, for the figures.
* :class:`AwsFaults` applies the decisions to boto3 clients with botocore event hooks: a ``before`` fault
  answers the call in ``before-call`` with an AWS error (or raises a connection error) without reaching
  moto; an ``after`` fault lets the call run and raises a read timeout in ``after-call``. That is what the
  adapter sees of an error that outlived botocore's own retries.
* :class:`SqsEntryFaults` makes entries of ``SendMessageBatch`` fail as SQS reports it: the entry is taken
  out of the request (``before-parameter-build``) and put back into the answer's ``Failed`` list
  (``after-call``), so what SQS says it refused is exactly what it did not enqueue.
* :class:`FlakyCommits` wraps a local workspace's SQLite connection and fails its ``COMMIT`` statements:
  before (rolled back) or after (committed, then an error).
* :class:`FlakyReads` fails read calls of a port object (local index, catalog and aggregate reads).
* :class:`FlakyEntries` does to the local queue's ``send_batch`` what :class:`SqsEntryFaults` does to SQS.
"""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from backend.errors import StoreError
from backend.ports import SendFailure

BEFORE = "before"
AFTER = "after"

# Operations that change something: an ``after`` fault on one of these leaves a write the caller never
# heard of. A read only ever fails ``before`` (losing a read's answer is the same as not reading).
AWS_WRITES = frozenset(
    {
        "PutObject",
        "PutItem",
        "UpdateItem",
        "TransactWriteItems",
        "SendMessageBatch",
        "DeleteMessageBatch",
        "ChangeMessageVisibilityBatch",
    }
)

# AWS errors a ``before`` fault answers with: (HTTP status, code), by service.
_ERRORS = {
    "s3": [(500, "InternalError"), (503, "SlowDown"), (503, "ServiceUnavailable")],
    "dynamodb": [
        (500, "InternalServerError"),
        (400, "ThrottlingException"),
        (400, "ProvisionedThroughputExceededException"),
        (400, "RequestLimitExceeded"),
    ],
    "sqs": [(500, "InternalError"), (503, "ServiceUnavailable"), (400, "RequestThrottled")],
}
# Conflicts with a concurrent writer, which the adapters retry themselves, by operation.
_CONFLICTS = {
    "TransactWriteItems": [(400, "TransactionCanceledException")],
    "PutItem": [(400, "TransactionConflictException")],
}


class Faults:
    """Seeded fault decisions at ``rate`` per eligible call; ``enabled`` switches them all off and on.

    ``injected`` counts faults by ``"<target> <kind>"``, ``eligible`` the calls that could have failed."""

    def __init__(self, seed: int, rate: float = 0.2) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.enabled = True
        self.injected: Counter[str] = Counter()
        self.eligible: Counter[str] = Counter()

    def decide(self, target: str, *, write: bool) -> str | None:
        if not self.enabled:
            return None
        self.eligible[target] += 1
        if self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice((BEFORE, AFTER)) if write else BEFORE
        self.injected[f"{target} {kind}"] += 1
        return kind

    def total(self, kind: str | None = None) -> int:
        return sum(n for k, n in self.injected.items() if kind is None or k.endswith(" " + kind))

    def by_kind(self) -> dict[str, int]:
        """Injected faults by target and kind, as a flat dict for the figures."""
        return {k.replace(" ", "_"): n for k, n in sorted(self.injected.items())}


class Scripted(Faults):
    """Faults that follow a script instead of the RNG: ``script[target]`` lists what its next calls do
    (None: succeed, ``before``, ``after``); calls past the end of the list succeed."""

    def __init__(self, **script: Sequence[str | None]) -> None:
        super().__init__(seed=0, rate=0.0)
        self.script = {target: list(kinds) for target, kinds in script.items()}

    def decide(self, target: str, *, write: bool) -> str | None:
        if not self.enabled:
            return None
        self.eligible[target] += 1
        plan = self.script.get(target)
        kind = plan.pop(0) if plan else None
        if kind is not None:
            self.injected[f"{target} {kind}"] += 1
        return kind


# -- AWS: botocore event hooks -------------------------------------------------------------------------------


class AwsFaults:
    """Fails calls of ``clients`` whose operation is in ``operations`` (all, if None).

    ``on_write(operation, params)`` is called for every write that *happened* although its caller got an
    error (an ``after`` fault on a call that succeeded), with the call's API parameters: the test's record
    of writes whose answer was lost."""

    def __init__(
        self,
        clients: Iterable[Any],
        faults: Faults,
        operations: Collection[str] | None = None,
        on_write: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.faults = faults
        self.operations = operations
        self.on_write = on_write
        for client in clients:
            events = client.meta.events
            events.register("before-parameter-build.*.*", self._decide)
            events.register("before-call.*.*", self._before)
            events.register("after-call.*.*", self._after)

    def _decide(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        op = model.name
        if self.operations is not None and op not in self.operations:
            return
        context["pik_params"] = params
        context["pik_fault"] = self.faults.decide(op, write=op in AWS_WRITES)

    def _before(self, model: Any, context: dict[str, Any], **_: Any) -> Any:
        if context.get("pik_fault") != BEFORE:
            return None
        service = model.service_model.endpoint_prefix
        errors = [*_ERRORS[service], *_CONFLICTS.get(model.name, [])]
        pick = self.faults.rng.randrange(len(errors) + 1)
        if pick == len(errors):
            raise EndpointConnectionError(endpoint_url=f"https://{service}.us-east-1.amazonaws.com/")
        status, code = errors[pick]
        context["pik_fault"] = None  # answered: after-call must not fail it again
        response = AWSResponse(f"https://{service}.us-east-1.amazonaws.com/", status, {}, None)
        parsed: dict[str, Any] = {
            "Error": {"Code": code, "Message": "injected fault: the request was not processed"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        if code == "TransactionCanceledException":
            # A concurrent transaction on the first item won: DynamoDB's answer names the conflict.
            items = context["pik_params"]["TransactItems"]
            parsed["CancellationReasons"] = [{"Code": "TransactionConflict"}] + [{"Code": "None"}] * (
                len(items) - 1
            )
        return response, parsed

    def _after(self, http_response: Any, model: Any, context: dict[str, Any], **_: Any) -> None:
        if context.get("pik_fault") != AFTER:
            return
        if http_response.status_code < 300 and self.on_write is not None:
            self.on_write(model.name, context["pik_params"])
        raise ReadTimeoutError(endpoint_url="https://injected.amazonaws.com/")


class SqsEntryFaults:
    """Fails each entry of ``SendMessageBatch`` on ``client`` at ``faults.rate``: SQS does not enqueue it
    and lists it under ``Failed`` (not the sender's fault, so sending it again may succeed).

    ``persistent`` bodies (a predicate) fail every time while ``faults.enabled``. ``refused`` keeps the body
    of every entry refused, in order."""

    def __init__(self, client: Any, faults: Faults, persistent: Callable[[str], bool] | None = None) -> None:
        self.faults = faults
        self.persistent = persistent or (lambda body: False)
        self.refused: list[str] = []
        events = client.meta.events
        events.register("before-parameter-build.sqs.SendMessageBatch", self._take_out)
        events.register("before-call.sqs.SendMessageBatch", self._all_out)
        events.register("after-call.sqs.SendMessageBatch", self._put_back)

    def _take_out(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        keep, out = [], []
        for entry in params["Entries"]:
            failing = self.faults.enabled and self.persistent(entry["MessageBody"])
            if not failing and self.faults.decide("SendMessageBatch entry", write=False):
                failing = True
            (out if failing else keep).append(entry)
        params["Entries"] = keep
        context["pik_refused"] = out
        context["pik_all_out"] = not keep
        self.refused += [e["MessageBody"] for e in out]

    def _all_out(self, context: dict[str, Any], **_: Any) -> Any:
        # SQS refuses an empty batch as a whole: when every entry failed, answer for it.
        if not context.get("pik_all_out"):
            return None
        return AWSResponse("https://sqs.us-east-1.amazonaws.com/", 200, {}, None), {"Successful": []}

    def _put_back(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        out = context.get("pik_refused") or []
        if not out:
            return
        parsed.setdefault("Failed", [])
        parsed["Failed"] += [
            {
                "Id": e["Id"],
                "SenderFault": False,
                "Code": "InternalError",
                "Message": "injected: not enqueued",
            }
            for e in out
        ]


# -- local: the SQLite connection, port proxies --------------------------------------------------------------


class FlakyCommits:
    """A proxy of a ``sqlite3.Connection`` whose ``COMMIT`` fails at ``faults.rate`` when ``eligible(sql)``
    says the transaction is one to fail (``sql``: the statements it ran, in order).

    ``before``: the commit raises and the store rolls back (nothing written). ``after``: the commit happens,
    then raises (written; the caller hears of an error). ``on_write(statements)`` is called for each such
    lost commit."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        faults: Faults,
        eligible: Callable[[Sequence[str]], str | None],
        on_write: Callable[[str, Sequence[str]], None] | None = None,
    ) -> None:
        self._conn = conn
        self._faults = faults
        self._eligible = eligible
        self._on_write = on_write
        self._statements: list[str] = []

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("BEGIN"):
            self._statements = []
        elif sql == "COMMIT":
            target = self._eligible(self._statements)
            kind = self._faults.decide(target, write=True) if target else None
            if kind == BEFORE:
                raise sqlite3.OperationalError("injected fault: disk I/O error before the commit")
            result = self._conn.execute(sql, *args)
            if kind == AFTER:
                if self._on_write is not None:
                    self._on_write(target or "", list(self._statements))
                raise sqlite3.OperationalError("injected fault: the commit's answer was lost")
            return result
        else:
            self._statements.append(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        self._statements.append(sql)
        return self._conn.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def flaky_commits(store: Any, *args: Any, **kwargs: Any) -> FlakyCommits:
    """Put a :class:`FlakyCommits` in front of ``store``'s connection on this thread (a LocalStore keeps
    one connection per thread)."""
    proxy = FlakyCommits(store.db.connection(), *args, **kwargs)
    store.db._local.conn = proxy
    return proxy


class FlakyReads:
    """A proxy of a port whose methods named in ``reads`` raise StoreError at ``faults.rate``."""

    def __init__(self, inner: Any, faults: Faults, reads: Collection[str]) -> None:
        self._inner = inner
        self._faults = faults
        self._reads = set(reads)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self._reads:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._faults.decide(name, write=False):
                raise StoreError(f"injected fault: {name} failed")
            return attr(*args, **kwargs)

        return call


class FlakyEntries:
    """The local queue with SQS's entry failures: each entry of ``send_batch`` is refused at
    ``faults.rate`` (not enqueued, reported as a failure that is not the sender's fault)."""

    def __init__(self, inner: Any, faults: Faults, persistent: Callable[[str], bool] | None = None) -> None:
        self._inner = inner
        self.faults = faults
        self.persistent = persistent or (lambda body: False)
        self.refused: list[str] = []

    def send_batch(self, bodies: Sequence[str]) -> list[SendFailure]:
        taken: list[int] = []
        failures: list[SendFailure] = []
        for i, body in enumerate(bodies):
            failing = self.faults.enabled and self.persistent(body)
            if not failing and self.faults.decide("send_batch entry", write=False):
                failing = True
            if failing:
                failures.append(SendFailure(i, "InternalError", "injected: not enqueued"))
                self.refused.append(body)
            else:
                taken.append(i)
        inner = self._inner.send_batch([bodies[i] for i in taken])
        failures += [SendFailure(taken[f.index], f.code, f.message, f.sender_fault) for f in inner]
        return sorted(failures, key=lambda f: f.index)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
