"""What the Replay pane's workers post back to it (Textual messages): a dry run's progress and plan, a
send's and the processor's progress and results."""

from __future__ import annotations

from textual.message import Message

from backend.model import ReplayAudit, ReplayPlan
from backend.services.drain import DrainResult


class PlanRead(Message):
    def __init__(
        self, serial: int, plan: ReplayPlan | None, error: str | None, *, cancelled: bool = False
    ) -> None:
        super().__init__()
        self.serial = serial
        self.plan = plan
        self.error = error
        self.cancelled = cancelled


class Planning(Message):
    def __init__(self, serial: int, read: int, total: int | None) -> None:
        super().__init__()
        self.serial = serial
        self.read = read
        self.total = total


class Sending(Message):
    def __init__(self, sent: int, failed: int, total: int) -> None:
        super().__init__()
        self.sent = sent
        self.failed = failed
        self.total = total


class Draining(Message):
    def __init__(self, received: int, processed: int, versions: int, total: int | None) -> None:
        super().__init__()
        self.received = received
        self.processed = processed
        self.versions = versions
        self.total = total


class Executed(Message):
    def __init__(self, audit: ReplayAudit | None, error: str | None, *, cancelled: bool = False) -> None:
        super().__init__()
        self.audit = audit
        self.error = error
        self.cancelled = cancelled


class Processed(Message):
    def __init__(self, report: DrainResult | None, error: str | None) -> None:
        super().__init__()
        self.report = report
        self.error = error
