"""The metrics keep the original kit's dimensions in the environment the template deploys them with.

CloudWatch keys a metric by its whole dimension set: an alarm or a dashboard on ``IngestCount`` by
``[Function, Source, Type]`` sees nothing of a metric emitted by ``[Function, Source, Type, service]``.
Powertools adds that ``service`` dimension whenever ``POWERTOOLS_SERVICE_NAME`` is set, and the template
sets it (for the log lines), so these tests run the handlers with the template's own variables
(tests/handlers/emf_probe.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.handlers.emf_probe import dimension_sets, emf_by_function, run_handlers, template_environment

NAMESPACE = "PipelineInvestigationKit"


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_handlers(tmp_path_factory.mktemp("emf"))


@pytest.fixture(scope="module")
def emf(lines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return emf_by_function(lines)


def _namespaces(doc: dict[str, Any]) -> set[str]:
    return {d["Namespace"] for d in doc["_aws"]["CloudWatchMetrics"]}


def test_the_probe_runs_with_the_templates_powertools_variables() -> None:
    env = template_environment()
    assert env["POWERTOOLS_SERVICE_NAME"]  # what made Powertools add a service dimension
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE


def test_ingest_counts_are_by_function_source_and_type(emf: dict[str, list[dict[str, Any]]]) -> None:
    accepted, duplicate, rejected = emf["ingest"]
    for doc in (accepted, duplicate):
        assert dimension_sets(doc) == [["Function", "Source", "Type"]]
        assert (doc["Function"], doc["Source"], doc["Type"]) == ("ingest", "demo", "heartbeat")
        assert {"IngestCount", "DuplicateCount", "IngestLagMs"} <= set(doc)
        assert _namespaces(doc) == {NAMESPACE}
    assert (accepted["DuplicateCount"], duplicate["DuplicateCount"]) == ([0.0], [1.0])
    # A rejection has no trustworthy source or type: it counts by function only.
    assert dimension_sets(rejected) == [["Function"]] and rejected["InvalidCount"] == [1.0]


def test_replay_counts_are_by_function(emf: dict[str, list[dict[str, Any]]]) -> None:
    sent, dry, bad = emf["replay"]
    for doc in (sent, dry, bad):
        assert dimension_sets(doc) == [["Function"]] and doc["Function"] == "replay"
        assert doc["ReplayRequestedCount"] == [1.0] and _namespaces(doc) == {NAMESPACE}
    assert sent["ReplayMessageCount"] == [1.0] and dry["DryRunCount"] == [1.0]
    assert bad["ReplayErrorCount"] == [1.0]


def test_processor_counts_are_by_function(emf: dict[str, list[dict[str, Any]]]) -> None:
    (doc,) = emf["processor"]
    assert dimension_sets(doc) == [["Function"]] and doc["Function"] == "processor"
    assert _namespaces(doc) == {NAMESPACE}
    assert (doc["ProcessorMessageCount"], doc["ProcessorErrorCount"]) == ([2.0], [1.0])


def test_no_metric_carries_a_service_dimension(emf: dict[str, list[dict[str, Any]]]) -> None:
    assert set(emf) == {"ingest", "replay", "processor"}
    for docs in emf.values():
        for doc in docs:
            assert "service" not in doc
            assert all("service" not in s for s in dimension_sets(doc))


def test_log_lines_keep_the_templates_service_name(lines: list[dict[str, Any]]) -> None:
    logs = [line for line in lines if "_aws" not in line]
    assert len(logs) >= 7  # a line per invocation at least
    assert {line["service"] for line in logs} == {template_environment()["POWERTOOLS_SERVICE_NAME"]}
