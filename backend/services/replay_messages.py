"""The messages a replay sends: their shape, the replay id they carry, and the fingerprint of a message list.

A message is the seed's ``{"event_id","entity_id","event_time","s3_bucket","s3_key"}`` plus ``replay_id``
(and ``receipt`` for a duplicate receipt). The fingerprint identifies the exact list of receipts a plan
would send, so that an execution can refuse a plan that is not the previewed one.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from backend.model import ReplayMessage
from backend.ports import Receipt
from backend.replay_fingerprint import fingerprint as fingerprint  # re-exported
from backend.times import Clock


def new_replay_id(clock: Clock) -> str:
    """``rp-YYYYMMDDTHHMMSS-<8 hex>``: sortable by time, unique without coordination."""
    return f"rp-{clock.now():%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


def message_body(r: Receipt, replay_id: str, bucket: str | None) -> str:
    """The message for one receipt: the seed's shape plus ``replay_id`` (and ``receipt`` for a duplicate)."""
    body: dict[str, Any] = {
        "event_id": r.event_id,
        "entity_id": r.entity_id,
        "event_time": r.event_time,
        "s3_bucket": r.s3_bucket or bucket,
        "s3_key": r.s3_key,
        "replay_id": replay_id,
    }
    if not r.accepted:
        body["receipt"] = r.receipt
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def replay_message(r: Receipt, replay_id: str, bucket: str | None) -> ReplayMessage:
    """:func:`message_body` as a model (the sample of a plan)."""
    return ReplayMessage.model_validate_json(message_body(r, replay_id, bucket))
