"""Replay: preview a replay (the dry run), send exactly what was previewed, and audit both (invariant 4).

A replay re-emits index receipts as messages on the replay queue, for the processor to recompute the
aggregate windows they belong to. It never changes events, raw bytes or aggregates.

* :meth:`ReplayService.plan` reads every page of the scope (any window size) and answers what a replay
  would send and why anything is left out: skipped receipts by reason, counts by day, the entities and the
  aggregate windows it touches and how many of those already have versions (the blast radius), a sample,
  and a fingerprint of the exact message list. With a :class:`~backend.services.projection.Projector` it
  also projects the aggregate versions a processor run would then produce (the what-if, bounded, computed
  by the processor's own dry run). It sends nothing; it writes a DRY_RUN audit record, nothing else.
* :meth:`ReplayService.execute` checks the plan (the index's selection: counts and fingerprint, no
  receipt held), refuses if it is over the size guard without ``force`` or differs from the previewed
  fingerprint, then reads the planned receipts again a page at a time and sends them, ten per batch call,
  retrying the entries the queue did not take: memory holds a stretch of 4,096 receipts, whatever the size.
  Each stretch is sent only once its fingerprint so far equals the checked plan's checkpoint there, so an
  index that changed between the check and the send stops the send before the stretch that differs (the
  audit says FAILED or PARTIAL, with why). ``sent + failed == would_send``, always; the audit record is
  written before the first message (RUNNING) and finished with the counts and the outcome.

Delivery is at least once: a batch call that fails as a whole may have delivered some entries, and its
retry sends them again. The audit record counts such sends as ``unconfirmed``: the queue holds between
``sent`` and ``sent + unconfirmed`` messages of the replay. The processor recomputes whole windows, so a
repeated message costs a recompute, never a wrong number.

Beside this module: the scope checks (:mod:`backend.services.scope`), the messages and the fingerprint
(:mod:`backend.services.replay_messages`), and the JSON shape of a plan or a result
(:mod:`backend.services.replay_json`). Answering an API request is the handler's
(:func:`backend.handlers.replay.api_reply`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from backend.errors import Cancelled, InvalidRequest, KitError, NotConfigured, ReadOnlyError, StoreError
from backend.model import (
    ReplayAudit,
    ReplayOutcome,
    ReplayPlan,
    ReplayRequest,
    ReplaySkips,
)
from backend.ports import (
    AuditLog,
    InvestigationIndex,
    RawCatalog,
    ReplayQueue,
    ReplaySelection,
)
from backend.replay_fingerprint import CHECKPOINT_EVERY
from backend.replay_selection import RAW_CHECK_CHUNK as RAW_CHECK_CHUNK  # re-exported
from backend.replay_selection import SCAN_PAGE as SCAN_PAGE  # re-exported
from backend.services.projection import Projection, Projector
from backend.services.replay_messages import new_replay_id, replay_message
from backend.services.replay_send import MAX_BATCH_ERRORS_IN_A_ROW as MAX_BATCH_ERRORS_IN_A_ROW  # re-exported
from backend.services.replay_send import PlanChanged, Progress, checked, send
from backend.services.scope import MAX_LIMIT as MAX_LIMIT  # re-exported: callers check --limit against it
from backend.services.scope import normalize
from backend.times import Clock, fmt

# A replay of more messages than this needs force (the console asks for a typed confirmation instead).
DEFAULT_CONFIRM_ABOVE = 1000
SAMPLE_SIZE = 10


class AuditNotFinished(StoreError):
    """The replay was sent, but its audit record could not be finished (it reads RUNNING); ``audit`` is
    the record it should read."""

    def __init__(self, message: str, audit: ReplayAudit) -> None:
        super().__init__(message)
        self.audit = audit


class ReplayRefused(KitError):
    """The replay was not sent (nothing was); ``audit`` is its REFUSED record, ``plan`` what it would do."""

    def __init__(self, message: str, plan: ReplayPlan, audit: ReplayAudit | None) -> None:
        super().__init__(message)
        self.plan = plan
        self.audit = audit


class VersionedWindows(Protocol):
    """What the replay needs of the aggregate store: which windows already have versions."""

    def windows_with_versions(self, windows: Sequence[tuple[str, str]]) -> set[tuple[str, str]]: ...


class ReplayService:
    """Plan, execute and audit replays over the ports.

    ``bucket`` names the raw store in messages whose receipt does not (the raw store's ``location``).
    ``confirm_above`` is the size guard. With ``read_only``, ``execute`` is refused and ``plan`` writes no
    audit record. ``projector`` (optional) adds the projected aggregate versions to a dry run's plan.
    ``sleep`` and the retry settings are for tests.
    """

    def __init__(
        self,
        scans: InvestigationIndex,
        catalog: RawCatalog,
        audit: AuditLog,
        queue: ReplayQueue | None = None,
        aggregates: VersionedWindows | None = None,
        *,
        projector: Projector | None = None,
        clock: Clock | None = None,
        bucket: str | None = None,
        confirm_above: int = DEFAULT_CONFIRM_ABOVE,
        read_only: bool = False,
        retries: int = 3,
        backoff_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.scans = scans
        self.catalog = catalog
        self.audit = audit
        self.queue = queue
        self.aggregates = aggregates
        self.projector = projector
        self.clock = clock or Clock()
        self.bucket = bucket
        self.confirm_above = confirm_above
        self.read_only = read_only
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep

    # -- the plan ---------------------------------------------------------------------------------------

    def plan(
        self,
        request: ReplayRequest,
        *,
        actor: str,
        on_progress: Callable[[int, int | None], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ReplayPlan:
        """The dry run: what a replay of ``request`` would send. Sends nothing; audits the preview.

        The index answers the selection in one pass (:meth:`InvestigationIndex.select_replay`: in SQL on
        the local backend, no receipt per row, never the whole scope in memory); :meth:`execute` reads the
        same list again to send it, and the fingerprint is the same either way.
        ``on_progress(receipts read, receipts to read when known)`` hears of each page read;
        ``should_stop()`` is asked between pages, and True raises :class:`backend.errors.Cancelled`
        (nothing audited, nothing sent)."""
        request = normalize(request)
        selection = self.scans.select_replay(
            request, sample=SAMPLE_SIZE, progress=on_progress, should_stop=should_stop
        )
        projection = None
        if self.projector is not None and selection.planned:
            if should_stop is not None and should_stop():
                raise Cancelled("stopped before the projection")
            projection = self.projector.project(selection.windows)
        plan = self._plan_of(request, selection, projection)
        if not self.read_only:
            self._audit_write(
                self.audit.begin,
                self._audit(plan, actor, ReplayOutcome.DRY_RUN, dry_run=True, finished=plan.created_at),
            )
        return plan

    def _plan_of(
        self,
        request: ReplayRequest,
        selection: ReplaySelection,
        projection: Projection | None = None,
        *,
        blast_radius: bool = True,
    ) -> ReplayPlan:
        replay_id = new_replay_id(self.clock)
        created_at = fmt(self.clock.now())
        s = selection
        # The windows that already have versions are the preview's to say (on AWS a query a window): an
        # execution does not ask again, and its record says None (not known here).
        with_versions = (
            len(self.aggregates.windows_with_versions(s.windows))
            if self.aggregates is not None and blast_radius
            else None
        )
        plan = ReplayPlan(
            replay_id=replay_id,
            request=request,
            created_at=created_at,
            scanned=s.scanned,
            matched=s.scanned - s.filtered,
            would_send=s.planned,
            skipped=ReplaySkips(
                duplicate=s.duplicate, missing_raw=s.missing_raw, over_limit=s.over_limit, filtered=s.filtered
            ),
            by_day=s.by_day,
            entities=s.entities,
            windows=len(s.windows),
            windows_with_versions=with_versions,
            first_event_time=s.first_event_time,
            last_event_time=s.last_event_time,
            sample=[replay_message(r, replay_id, self.bucket) for r in s.sample],
            fingerprint=s.fingerprint,
            needs_force=s.planned > self.confirm_above,
            why=[],
        )
        if projection is not None:
            plan.projected = projection.projected
            plan.windows_projected = projection.windows_projected
            plan.windows_not_projected = projection.windows_not_projected
        plan.why.extend(self._why(plan, projection))
        return plan

    def _why(self, plan: ReplayPlan, projection: Projection | None = None) -> list[str]:
        """Sentences for the user: why nothing (or less than expected) would be sent, and what to know."""
        req, s = plan.request, plan.skipped
        notes: list[str] = []
        if plan.scanned == 0:
            if req.entity_id is not None:
                notes.append(
                    f"nothing is indexed for entity {req.entity_id!r} in [{req.start_time}, {req.end_time}): "
                    "check the entity id and the window (times are UTC, the end is exclusive)"
                )
            else:
                notes.append(
                    f"nothing is indexed for {req.source}/{req.event_type} on the event days "
                    f"[{req.start_day}, {req.end_day}): check the source, the event type and the days"
                )
        elif plan.matched == 0:
            notes.append(f"all {plan.scanned:,} receipts in scope were left out by the filters")
        if s.duplicate and plan.would_send == 0 and s.duplicate + s.filtered == plan.scanned:
            notes.append(
                f"every matching receipt ({s.duplicate:,}) is a duplicate receipt; include duplicates to "
                "replay them (one message per receipt)"
            )
        elif s.duplicate:
            notes.append(
                f"{s.duplicate:,} duplicate receipts are left out: each event is sent once, as its accepted "
                "receipt"
            )
        if s.missing_raw:
            notes.append(
                f"{s.missing_raw:,} receipts have no raw bytes at their s3_key and cannot be replayed: "
                "the raw store is incomplete (restored from a backup? a lifecycle rule?)"
            )
        if s.over_limit:
            notes.append(
                f"{s.over_limit:,} more receipts match beyond the limit of {req.limit:,}: raise the limit to "
                "include them"
            )
        if plan.needs_force:
            notes.append(
                f"{plan.would_send:,} messages is above the size guard of {self.confirm_above:,}: executing "
                "needs force"
            )
        if projection is not None:
            notes.extend(projection.summary())
        elif plan.windows_with_versions:
            notes.append(
                f"{plan.windows_with_versions:,} of the {plan.windows:,} aggregate windows already have "
                "versions: a processor run may add new versions of them"
            )
        return notes

    # -- execution --------------------------------------------------------------------------------------

    def execute(
        self,
        request: ReplayRequest,
        *,
        actor: str,
        force: bool = False,
        expected_fingerprint: str | None = None,
        on_progress: Callable[[int, int, int], None] | None = None,
    ) -> ReplayAudit:
        """Send exactly the planned messages; returns the finished audit record.

        Raises :class:`ReplayRefused` (nothing sent, REFUSED audited) over the size guard without
        ``force``, or when ``expected_fingerprint`` (the plan's fingerprint, or a prefix of at least 12
        characters) is given and the plan is not that one any more.
        ``on_progress(sent, failed, would_send)`` is called after every batch. The audit writes are
        retried as the sends are; :class:`AuditNotFinished` (a StoreError) says the replay was sent but its
        record could not be finished.
        """
        if self.read_only:
            raise ReadOnlyError("replay refused: the kit is in read-only mode (a dry run is allowed)")
        if self.queue is None:
            raise NotConfigured("no replay queue is configured (REPLAY_QUEUE_URL)")
        expected = (expected_fingerprint or "").strip().lower() or None
        if expected is not None and len(expected) < 12:
            raise InvalidRequest("an expected fingerprint needs at least its first 12 characters")
        request = normalize(request)
        selection = self.scans.select_replay(request, sample=SAMPLE_SIZE, keep=CHECKPOINT_EVERY)
        plan = self._plan_of(request, selection, blast_radius=False)
        reason = self._refusal(plan, expected, force)
        if reason is not None:
            refused = self._audit(plan, actor, ReplayOutcome.REFUSED, finished=fmt(self.clock.now()))
            refused = refused.model_copy(update={"error": reason})
            self._audit_write(self.audit.begin, refused)
            raise ReplayRefused(f"replay {plan.replay_id} not sent: {reason}", plan, refused)
        record = self._audit(plan, actor, ReplayOutcome.RUNNING).model_copy(update={"forced": force})
        self._audit_write(self.audit.begin, record)
        progress = Progress()
        try:
            error = send(self, plan, checked(self.scans, request, selection), progress, on_progress)
        except PlanChanged as exc:
            # Caught before its stretch was sent: what was sent is counted, the rest was not sent.
            progress.failed = plan.would_send - progress.sent
            error = str(exc)
        except BaseException:
            interrupted = record.model_copy(
                update={
                    "outcome": ReplayOutcome.INTERRUPTED,
                    "finished_at": fmt(self.clock.now()),
                    "sent": progress.sent,
                    "failed": progress.failed,
                    "unconfirmed": progress.unconfirmed,
                    "error": "interrupted while sending: the messages not counted as sent were not sent",
                }
            )
            # The interruption is what the caller must hear of; a record left RUNNING also says it.
            with contextlib.suppress(StoreError):
                self._audit_write(self.audit.finish, interrupted)
            raise
        final = self._finished(record, progress, error)
        try:
            self._audit_write(self.audit.finish, final)
        except StoreError as exc:
            raise AuditNotFinished(
                f"replay {plan.replay_id} {final.outcome.value}: {final.sent:,} of {plan.would_send:,} "
                f"messages sent, but its audit record could not be finished and still reads RUNNING ({exc})",
                final,
            ) from None
        return final

    def _refusal(self, plan: ReplayPlan, expected: str | None, force: bool) -> str | None:
        """Why ``plan`` must not be sent (None: it may): not the previewed plan, or over the size guard."""
        if expected is not None and not plan.fingerprint.startswith(expected):
            return (
                "the replay's scope changed since its preview (events arrived or the filters differ): "
                "preview it again"
            )
        if plan.needs_force and not force:
            return (
                f"{plan.would_send:,} messages is above the size guard of {self.confirm_above:,}; "
                "confirm with force to send them"
            )
        return None

    def _finished(self, record: ReplayAudit, progress: Progress, error: str | None) -> ReplayAudit:
        """The RUNNING ``record`` finished with the counts of ``progress`` and the outcome they make."""
        if progress.failed == 0:
            outcome = ReplayOutcome.SENT
        elif progress.sent == 0:
            outcome = ReplayOutcome.FAILED
        else:
            outcome = ReplayOutcome.PARTIAL
        return record.model_copy(
            update={
                "outcome": outcome,
                "finished_at": fmt(self.clock.now()),
                "sent": progress.sent,
                "failed": progress.failed,
                "unconfirmed": progress.unconfirmed,
                "error": error,
            }
        )

    def _audit_write(self, write: Callable[[ReplayAudit], None], record: ReplayAudit) -> None:
        """``write(record)`` (the audit's begin or finish), retried as the sends are: a replay that was
        sent must not be reported as failed, nor stay RUNNING in the trail, because one write failed.

        Both writes are conditional (a new replay id; a RUNNING record), so a retry is refused when an
        earlier attempt did write and only its answer was lost: then the stored record is the one wanted,
        and the write is done."""
        error: StoreError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                write(record)
                return
            except InvalidRequest:
                if error is None:
                    raise
                try:
                    stored = self.audit.get(record.replay_id)
                except StoreError:
                    raise error from None
                if stored != record:
                    raise
                return
            except StoreError as exc:
                error = exc
        assert error is not None
        raise error

    def _audit(
        self,
        plan: ReplayPlan,
        actor: str,
        outcome: ReplayOutcome,
        *,
        dry_run: bool = False,
        finished: str | None = None,
    ) -> ReplayAudit:
        return ReplayAudit(
            replay_id=plan.replay_id,
            outcome=outcome,
            dry_run=dry_run,
            actor=actor,
            started_at=plan.created_at,
            finished_at=finished,
            request=plan.request,
            scanned=plan.scanned,
            matched=plan.matched,
            would_send=plan.would_send,
            skipped=plan.skipped,
            entities=plan.entities,
            windows=plan.windows,
            windows_with_versions=plan.windows_with_versions,
            fingerprint=plan.fingerprint,
        )
