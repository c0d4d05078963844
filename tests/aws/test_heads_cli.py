"""`pik aws heads-backfill` on a moto server: an aggregates table whose versions are older than window heads
(the original kit's, an earlier release's) gets the heads it lacks and the record that says every window
has one; running it again writes nothing; a dry run counts and writes nothing; an interrupted run resumes;
and a replay's dry run reads the heads (BatchGetItem) instead of one Query per window afterwards."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import pytest
from botocore.exceptions import ClientError

from backend.adapters.aws.aggregates import DynamoAggregates
from backend.adapters.aws.window_heads import RECORD_KEY, head_key
from backend.kit import open_aws
from backend.settings import AwsSettings
from pik_console.cli import main
from tests.aws.test_aws_init import REGION, endpoint, exports, pik
from tests.contract.test_aggregate_store import manifest, version

__all__ = ["endpoint"]  # the fixture, shared with the init tests

DAYS = ["2025-12-26", "2025-12-27", "2025-12-28"]
NEW = [(f"new_{i}", DAYS[i % 3]) for i in range(6)]  # this release's versions: with heads
LEGACY = [(f"legacy #{i}", DAYS[i % 3]) for i in range(18)]  # the original kit's `DAY#<d>#VER#<seconds>`
EARLY = [(f"early/{i}", DAYS[i % 3]) for i in range(18)]  # an earlier release's versions, without heads
OLD = LEGACY + EARLY


class Stack:
    def __init__(self, url: str, settings: dict[str, str]) -> None:
        self.url = url
        self.agg = settings["AGG_TABLE"]
        self.target = ["--backend", "aws", "--endpoint-url", url, "--region", REGION]
        self.ddb = boto3.client("dynamodb", endpoint_url=url, region_name=REGION)

    def items(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.agg}
        while True:
            page = self.ddb.scan(**kwargs)
            found += page["Items"]
            if "LastEvaluatedKey" not in page:
                return sorted(found, key=lambda i: (i["PK"]["S"], i["SK"]["S"]))
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def marked(self) -> bool:
        return "Item" in self.ddb.get_item(TableName=self.agg, Key=RECORD_KEY, ConsistentRead=True)

    def has_head(self, window: tuple[str, str]) -> bool:
        return "Item" in self.ddb.get_item(TableName=self.agg, Key=head_key(*window), ConsistentRead=True)

    def backfill(self, *extra: str) -> tuple[int, dict[str, Any], str]:
        code, out, err = pik("aws", "heads-backfill", *self.target, "--json", *extra)
        return code, (json.loads(out) if code == 0 else {}), err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def stack(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """A stack made by `pik aws init` whose aggregates table holds versions from before window heads: 6
    windows of this release (with heads), then 36 of older shapes (without), and no record."""
    code, out, err = pik("aws", "init", "--endpoint-url", endpoint, "--prefix", "hb")
    assert (code, err) == (0, ""), err
    settings = exports(out)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    s = Stack(endpoint, settings)
    kit = open_aws(AwsSettings().model_copy(update={"endpoint_url": endpoint, "region": REGION}))
    try:
        agg = kit.aggregates
        assert isinstance(agg, DynamoAggregates)
        for entity, day in NEW:
            m = manifest(entity)
            assert agg.append(version(1, m).model_copy(update={"entity_id": entity, "day": day}), m)
        for entity, day in EARLY:
            v = version(1, manifest(entity)).model_copy(update={"entity_id": entity, "day": day})
            s.ddb.put_item(TableName=s.agg, Item=agg._item(v))
    finally:
        kit.close()
    for i, (entity, day) in enumerate(LEGACY):
        for seconds in (1766900000, 1766900000 + i + 1):  # two versions of one window: one head
            s.ddb.put_item(
                TableName=s.agg,
                Item={"PK": {"S": f"ENTITY#{entity}"}, "SK": {"S": f"DAY#{day}#VER#{seconds}"},
                      "metric_name": {"S": "m"}, "value": {"N": "3"}},
            )  # fmt: skip
    s.ddb.delete_item(TableName=s.agg, Key=RECORD_KEY)  # as a table written before heads: not marked
    assert all(s.has_head(w) for w in NEW) and not any(s.has_head(w) for w in OLD)
    yield s


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every AWS call the command line makes in this process: ``Operation`` and ``Operation:table``."""
    seen: Counter[str] = Counter()
    real = botocore.client.BaseClient._make_api_call

    def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
        seen[operation] += 1
        tables = [params["TableName"]] if "TableName" in params else list(params.get("RequestItems", {}))
        for table in tables:
            seen[f"{operation}:{table}"] += 1
        return real(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counted)
    return seen


def test_a_dry_run_counts_the_windows_without_heads_and_writes_nothing(stack: Stack) -> None:
    before = stack.items()
    code, answer, err = stack.backfill("--dry-run")
    assert (code, err) == (0, "")
    assert answer == {"dry_run": True, "windows": 42, "lacking": 36, "written": 0, "marked": False,
                      "was_marked": False}  # fmt: skip
    assert stack.items() == before
    code, out, err = pik("aws", "heads-backfill", *stack.target, "--dry-run")
    assert (code, err) == (0, "")
    assert "36 of 42 windows with versions lack a head" in out and "Nothing was written" in out
    assert stack.items() == before
    # read-only mode allows the dry run, which writes nothing either
    assert stack.backfill("--dry-run", "--read-only")[1]["lacking"] == 36
    assert stack.items() == before


def test_the_backfill_writes_the_missing_heads_then_the_record_and_a_second_run_writes_nothing(
    stack: Stack, calls: Counter[str]
) -> None:
    code, out, err = pik("aws", "heads-backfill", *stack.target)
    assert (code, err) == (0, ""), err
    assert "Wrote the heads of 36 windows (6 of the 42 windows with versions had theirs already)" in out
    assert "the table is marked now" in out
    assert all(stack.has_head(w) for w in NEW + OLD) and stack.marked()
    heads = [i for i in stack.items() if i["SK"]["S"].endswith("#HEAD")]
    assert len(heads) == 42
    assert {(h["entity_id"]["S"], h["day"]["S"]) for h in heads} == set(NEW + OLD)
    assert calls[f"BatchWriteItem:{stack.agg}"] == 2  # 36 heads, 25 a call
    assert calls[f"PutItem:{stack.agg}"] == 1  # the record, after the heads

    before = stack.items()
    calls.clear()
    code, answer, err = stack.backfill()
    assert (code, err) == (0, "")
    assert answer == {"dry_run": False, "windows": 42, "lacking": 0, "written": 0, "marked": True,
                      "was_marked": True}  # fmt: skip
    assert stack.items() == before  # nothing rewritten, the record's `since` kept
    assert calls[f"BatchWriteItem:{stack.agg}"] == 0 and calls[f"PutItem:{stack.agg}"] == 0
    assert stack.backfill("--dry-run")[1]["lacking"] == 0
    for extra in ((), ("--dry-run",)):
        code, out, err = pik("aws", "heads-backfill", *stack.target, *extra)
        assert (code, err) == (0, "")
        assert out.startswith("All 42 windows with versions have their heads and the table records it")
    assert stack.items() == before


def test_an_interrupted_backfill_leaves_no_record_and_the_next_run_writes_the_rest(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = botocore.client.BaseClient._make_api_call
    writes = Counter[str]()

    def failing(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "BatchWriteItem":
            writes[operation] += 1
            if writes[operation] == 2:
                error = {"Error": {"Code": "InternalServerError", "Message": "try again"}}
                raise ClientError(error, operation)  # type: ignore[arg-type]
        return real(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", failing)
    out, terminal = io.StringIO(), Terminal()
    assert main(["aws", "heads-backfill", *stack.target], out, terminal) == 1
    assert out.getvalue() == ""
    progress, error = terminal.getvalue().split("\n")[:2]  # the error on a line of its own
    assert progress.endswith("\rwritten 25 heads   ") and error.startswith("pik aws: error: ")
    assert terminal.getvalue().endswith("\n") and terminal.getvalue().count("\n") == 2
    assert not stack.marked()  # readers keep asking window by window: never wrong
    assert sum(stack.has_head(w) for w in OLD) == 25  # the first batch stayed
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", real)
    code, answer, err = stack.backfill()
    assert (code, err) == (0, "")
    assert (answer["lacking"], answer["written"], answer["marked"]) == (11, 11, True)
    assert all(stack.has_head(w) for w in OLD)


def test_a_replay_dry_run_reads_the_heads_after_the_backfill(
    stack: Stack, calls: Counter[str], tmp_path: Path
) -> None:
    """Events in 12 windows, 8 of which have versions of an older shape: the blast radius asks a Query per
    window before the backfill, one BatchGetItem after, and finds the same 8 (the plan's projection reads
    the windows' latest versions a Query per entity, after the backfill only of the entities with heads)."""
    day = DAYS[0]
    versioned = [e for e, d in LEGACY if d == day][:4] + [e for e, d in EARLY if d == day][:4]
    entities = versioned + [f"fresh_{i}" for i in range(4)]
    lines = tmp_path / "events.jsonl"
    events = [
        {"source": "demo", "event_type": "heartbeat", "entity_id": e, "event_time": f"{day}T10:00:00Z",
         "payload": {"n": n}}
        for n, e in enumerate(entities)
    ]  # fmt: skip
    lines.write_text("\n".join(json.dumps(e) for e in events) + "\n", encoding="utf-8")
    assert pik("ingest", str(lines), *stack.target, "--json")[0] == 0
    replay = ["replay", "--source", "demo", "--type", "heartbeat", "--day", day, "--json", *stack.target]

    calls.clear()
    code, out, err = pik(*replay)
    assert (code, err) == (0, ""), err
    before = json.loads(out)
    assert (before["windows"], before["windows_with_versions"]) == (12, 8)
    # the blast radius: a Query per window; the projection's latest versions: a Query per entity (no heads
    # to skip the 4 without versions), and 2 more for each of the 4 windows of the original kit's shape
    # (its chain is read by DynamoAggregates.latest)
    assert calls[f"Query:{stack.agg}"] == 12 + 12 + 2 * 4
    assert calls["BatchGetItem"] == 0

    assert stack.backfill()[1]["written"] == 36
    calls.clear()
    code, out, err = pik(*replay)
    assert (code, err) == (0, ""), err
    after = json.loads(out)
    assert (after["windows"], after["windows_with_versions"]) == (12, 8)
    # the blast radius's 12 Queries became one BatchGetItem, and the projection's heads another, which
    # spares it the 4 windows without versions
    assert calls[f"Query:{stack.agg}"] == 8 + 2 * 4 and calls[f"BatchGetItem:{stack.agg}"] == 2


def test_what_the_backfill_refuses_is_one_line(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    before = stack.items()
    code, _, err = pik("aws", "heads-backfill", "--dry-run")  # the local backend
    assert code == 2 and "AWS stack" in err and len(err.strip().splitlines()) == 1
    code, _, err = pik("aws", "heads-backfill", *stack.target, "--read-only")
    assert code == 1 and "refused in read-only mode" in err and len(err.strip().splitlines()) == 1
    code, _, err = pik("aws", "heads-backfill", *stack.target, "--stack", "no-such-stack")
    assert code == 1 and "no-such-stack" in err and len(err.strip().splitlines()) == 1
    monkeypatch.delenv("AGG_TABLE")
    code, _, err = pik("aws", "heads-backfill", *stack.target)
    assert code == 1 and "no aggregates table (AGG_TABLE is not set)" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.delenv("RAW_BUCKET")
    code, _, err = pik("aws", "heads-backfill", *stack.target)
    assert code == 2 and "--stack NAME" in err and len(err.strip().splitlines()) == 1
    assert stack.items() == before and not stack.marked()


def test_a_terminal_sees_the_progress_and_json_stays_clean(stack: Stack) -> None:
    out, err = io.StringIO(), Terminal()
    assert main(["aws", "heads-backfill", *stack.target], out, err) == 0
    shown = err.getvalue()
    assert "\rscanned " in shown and "\rwritten 25 heads" in shown and "\rwritten 36 heads" in shown
    assert shown.endswith("\n") and "Wrote the heads of 36 windows" in out.getvalue()
    out, err = io.StringIO(), Terminal()
    assert main(["aws", "heads-backfill", *stack.target, "--json"], out, err) == 0
    assert err.getvalue() == "" and json.loads(out.getvalue())["was_marked"] is True
