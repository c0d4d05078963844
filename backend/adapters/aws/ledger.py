"""The ingest ledger on DynamoDB (:class:`backend.ports.IngestLedger`): which lines of an input are stored.

Each receipt or rejection that has a line number is written in one transaction with an item of the dedupe
table, ``event_id=LINE#<origin>#<line>``, that adds its bytes' sha256 to the set ``shas`` (see
``backend.adapters.aws.event_items``). So the ledger never says more or less than the index holds, and a
re-run of ``pik ingest FILE`` after a failure skips exactly the lines the failed run stored.

Cost: reading the ledger for a batch of N lines is ``ceil(N / 100)`` ``BatchGetItem`` calls (strongly
consistent); a line is its own partition key, so writing them never makes a hot partition.
"""

from __future__ import annotations

import functools
from typing import Any

from backend.adapters.aws.connection import AwsConnection
from backend.adapters.aws.dynamo import value_of
from backend.adapters.aws.errors import aws
from backend.adapters.aws.event_items import line_key

BATCH_GET_KEYS = 100


class IngestLedgerReads(AwsConnection):
    """:meth:`backend.ports.IngestLedger.delivered` from the dedupe table's line items."""

    def delivered(self, origin: str, first_line: int, last_line: int) -> dict[int, set[str]]:
        keys = [line_key(origin, n) for n in range(first_line, last_line + 1)]
        chunks = [keys[i : i + BATCH_GET_KEYS] for i in range(0, len(keys), BATCH_GET_KEYS)]
        out: dict[int, set[str]] = {}
        for items in self.map_concurrently(self._get_lines, chunks):
            for item in items:
                line = value_of(item, "line")
                shas = item.get("shas", {}).get("SS", [])
                if line is not None and shas:
                    out[int(line)] = set(shas)
        return out

    def _get_lines(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        request: dict[str, Any] = {self.t.dedupe: {"Keys": keys, "ConsistentRead": True}}
        with aws("read the ingest ledger (which lines of the input are stored)"):
            while request:
                answer: Any = self.retrying(functools.partial(self.ddb.batch_get_item, RequestItems=request))
                found += answer.get("Responses", {}).get(self.t.dedupe, [])
                request = answer.get("UnprocessedKeys") or {}
        return found
