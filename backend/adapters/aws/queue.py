"""The replay queue on SQS (:class:`backend.ports.ReplayQueue`): the stack's replay queue and the
dead-letter queue its redrive policy names.

Calls: ``send_batch`` is one ``SendMessageBatch`` (entries the queue refuses come back as
:class:`~backend.ports.SendFailure`, never raised); ``receive`` one ``ReceiveMessage``; ``delete`` and
``release`` one ``DeleteMessageBatch`` / ``ChangeMessageVisibilityBatch`` (to 0) per 10 handles; ``depth``
one ``GetQueueAttributes`` per queue. ``max_receives`` and the dead-letter queue, unless given, are read
once from the queue's ``RedrivePolicy`` (one ``GetQueueAttributes``, made only when first needed, so a
sender never needs that permission).

Entries SQS would refuse as a whole request (an empty body, one over 256 KiB, characters outside the XML
range SQS accepts) are refused here, per entry and as the sender's fault, before the call: as the local
queue does. Entries past SQS's 256 KiB limit on a whole batch are returned as failures that are *not* the
sender's fault, so the caller sends them again in its next call.

Receives are long polls of ``wait_time_s`` (1 s): a long poll asks every SQS server and answers as soon as
it has a message, so a loop that receives until an empty answer (``pik process``) drains the queue, at the
price of that one second at the end. A short poll (``wait_time_s=0``) answers from a sample of the servers,
and its empty answer from a nearly empty queue does not prove the queue empty. (The processor Lambda does
not use this class: its event source mapping long-polls.)

**Listing the dead letters.** SQS cannot peek at a queue: the only read is a receive, which hides what it
returns. :meth:`SqsReplayQueue.dead_letters` therefore reads the whole dead-letter queue on each call,
receiving it ten at a time with a short visibility timeout (``peek_visibility_s``, 30 s) until it has as
many messages as ``ApproximateNumberOfMessages`` said were waiting (or ``peek_max``, 1,000), then makes
every one of them visible again at once (``ChangeMessageVisibilityBatch`` to 0), and answers a page of them
sorted by (sent time, message id), keyset-paged on that key. What that means:

* it costs about one call per 10 dead letters per page, so it is meant for a dead-letter queue of
  hundreds, which is what a healthy stack has; past ``peek_max`` only the first ``peek_max`` messages SQS
  hands out are listed (``depth().dead`` still counts them all);
* while a listing runs, the messages it holds are invisible to anyone else (a redrive, another console)
  for up to ``peek_visibility_s``, and two listings at once each see only part of the queue;
* every listing counts as a receive of each dead letter *in the dead-letter queue*: if that queue had a
  redrive policy of its own, listing would move its messages on (the template gives it none);
* ``ApproximateNumberOfMessages`` is approximate and can lag a minute behind: a letter that has just
  arrived may be missing from a listing made in that minute;
* SQS says neither when a message was moved nor how often it was received before: a message moves on the
  receive after its ``maxReceiveCount``-th, so ``receive_count`` is ``max_receives`` and ``dead_at`` is
  None. ``sent_at`` is the original send time (SQS keeps it when it moves a message).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from backend.adapters.aws.clients import AwsClients
from backend.adapters.aws.errors import aws
from backend.errors import InvalidRequest, StoreError
from backend.model import Page
from backend.paging import decode_cursor, encode_cursor
from backend.ports import QUEUE_BATCH, DeadLetter, QueueDepth, QueueMessage, SendFailure
from backend.times import fmt

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

# SQS's limits: one message body, one batch (the sum of its bodies), the visibility timeout.
MAX_BODY_BYTES = 256 * 1024
MAX_BATCH_BYTES = 256 * 1024
MAX_VISIBILITY_S = 12 * 3600
# Characters SQS accepts in a message body (the XML character range).
_BAD_CHARS = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DEAD_KIND = "aws-dead-letters"


def _sent_at(attributes: Mapping[Any, str]) -> str:
    ms = int(attributes.get("SentTimestamp", "0"))
    return fmt(datetime.fromtimestamp(ms / 1000, tz=UTC))


class SqsReplayQueue:
    """:class:`backend.ports.ReplayQueue` on an SQS queue and its dead-letter queue.

    ``dlq_url`` None: the queue named by the replay queue's redrive policy. ``max_receives`` None: the
    policy's ``maxReceiveCount`` (a queue without a redrive policy is an error when it is needed: its
    failing messages would be retried for ever).
    """

    def __init__(
        self,
        clients: AwsClients,
        queue_url: str,
        dlq_url: str | None = None,
        max_receives: int | None = None,
        *,
        wait_time_s: int = 1,
        peek_visibility_s: int = 30,
        peek_max: int = 1000,
    ) -> None:
        if max_receives is not None and max_receives < 1:
            raise ValueError("max_receives must be at least 1")
        self.sqs = clients.sqs
        self.queue_url = queue_url
        self._dlq_url = dlq_url
        self._max_receives = max_receives
        self.wait_time_s = wait_time_s
        self.peek_visibility_s = peek_visibility_s
        self.peek_max = peek_max

    # -- the redrive policy (read once, when first needed) ------------------------------------------------

    def _policy(self) -> dict[str, Any]:
        with aws("read the replay queue's redrive policy"):
            attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"])
        text = attrs.get("Attributes", {}).get("RedrivePolicy")
        if not text:
            raise StoreError(
                f"the replay queue {self.queue_url} has no redrive policy: a failing message would be "
                "retried for ever (create it with `pik aws init` or the SAM template)"
            )
        policy: dict[str, Any] = json.loads(text)
        return policy

    @property
    def max_receives(self) -> int:
        if self._max_receives is None:
            self._max_receives = int(self._policy()["maxReceiveCount"])
        return self._max_receives

    @max_receives.setter
    def max_receives(self, value: int) -> None:
        self._max_receives = value

    @property
    def dlq_url(self) -> str:
        if self._dlq_url is None:
            arn = str(self._policy()["deadLetterTargetArn"])
            _, _, _, _, account, name = arn.split(":", 5)
            with aws("find the replay dead-letter queue"):
                self._dlq_url = self.sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)[
                    "QueueUrl"
                ]
        return self._dlq_url

    # -- ReplayQueue -----------------------------------------------------------------------------------

    def send_batch(self, bodies: Sequence[str]) -> list[SendFailure]:
        if len(bodies) > QUEUE_BATCH:
            raise InvalidRequest(f"a batch holds at most {QUEUE_BATCH} messages, got {len(bodies)}")
        failures: list[SendFailure] = []
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        total = 0
        for i, body in enumerate(bodies):
            if not isinstance(body, str) or not body:
                failures.append(
                    SendFailure(i, "EmptyValue", "a message body must be a non-empty string", True)
                )
                continue
            size = len(body.encode("utf-8", "surrogatepass"))
            if size > MAX_BODY_BYTES:
                failures.append(
                    SendFailure(i, "InvalidParameterValue", f"message over {MAX_BODY_BYTES} bytes", True)
                )
            elif _BAD_CHARS.search(body):
                failures.append(
                    SendFailure(
                        i,
                        "InvalidMessageContents",
                        "the message holds characters SQS does not accept (outside the XML range)",
                        True,
                    )
                )
            elif total + size > MAX_BATCH_BYTES:
                # Not the entry's fault: it fits in a call of its own, so the caller sends it again.
                failures.append(
                    SendFailure(i, "BatchRequestTooLong", f"the batch is over {MAX_BATCH_BYTES} bytes")
                )
            else:
                total += size
                entries.append({"Id": str(i), "MessageBody": body})
        if entries:
            with aws("send replay messages"):
                answer = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            failures += [
                SendFailure(
                    int(f["Id"]), f.get("Code", "error"), f.get("Message", ""), bool(f.get("SenderFault"))
                )
                for f in answer.get("Failed", [])
            ]
        return sorted(failures, key=lambda f: f.index)

    def receive(self, max_messages: int = QUEUE_BATCH, visibility_timeout_s: int = 30) -> list[QueueMessage]:
        if not 1 <= max_messages <= QUEUE_BATCH:
            raise InvalidRequest(f"receive takes 1 to {QUEUE_BATCH} messages, got {max_messages}")
        if not 0 <= visibility_timeout_s <= MAX_VISIBILITY_S:
            raise InvalidRequest(f"the visibility timeout must be 0 to {MAX_VISIBILITY_S} seconds")
        with aws("receive replay messages"):
            answer = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=max_messages,
                VisibilityTimeout=visibility_timeout_s,
                WaitTimeSeconds=self.wait_time_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
        out = []
        for m in answer.get("Messages", []):
            attrs = m.get("Attributes", {})
            out.append(
                QueueMessage(
                    message_id=m["MessageId"],
                    receipt_handle=m["ReceiptHandle"],
                    body=m.get("Body", ""),
                    receive_count=int(attrs.get("ApproximateReceiveCount", "1")),
                    sent_at=_sent_at(attrs),
                )
            )
        return out

    def delete(self, receipt_handles: Sequence[str]) -> None:
        self._per_ten(self.queue_url, receipt_handles, "delete replay messages", release=False)

    def release(self, receipt_handles: Sequence[str]) -> None:
        self._per_ten(self.queue_url, receipt_handles, "release replay messages", release=True)

    def _per_ten(self, url: str, receipt_handles: Sequence[str], action: str, *, release: bool) -> None:
        """Delete or release (visibility 0) ``receipt_handles``, ten per call. A handle SQS refuses as the
        sender's fault (stale: the message was deleted, or received again since) is ignored, as the port
        allows; any other refusal raises, so the caller can try again."""
        handles = [h for h in receipt_handles if h]
        for start in range(0, len(handles), QUEUE_BATCH):
            part = handles[start : start + QUEUE_BATCH]
            with aws(action):
                if release:
                    answer: Any = self.sqs.change_message_visibility_batch(
                        QueueUrl=url,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                            for i, h in enumerate(part)
                        ],
                    )
                else:
                    answer = self.sqs.delete_message_batch(
                        QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(part)]
                    )
            failed = [f for f in answer.get("Failed", []) if not f.get("SenderFault")]
            if failed:
                f = failed[0]
                raise StoreError(
                    f"cannot {action}: SQS refused {len(failed)} of {len(part)} entries "
                    f"({f.get('Code', 'error')}: {f.get('Message', '')})"
                )

    def depth(self) -> QueueDepth:
        names: Any = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        with aws("read the replay queue's depth"):
            main = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)["Attributes"]
        dlq_url = self.dlq_url
        with aws("read the replay dead-letter queue's depth"):
            dead = self.sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=names)["Attributes"]
        return QueueDepth(
            visible=int(main.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(main.get("ApproximateNumberOfMessagesNotVisible", 0)),
            # A dead letter that a listing holds is still dead: count the hidden ones too.
            dead=int(dead.get("ApproximateNumberOfMessages", 0))
            + int(dead.get("ApproximateNumberOfMessagesNotVisible", 0)),
        )

    def dead_letters(self, *, limit: int = 100, after: str | None = None) -> Page[DeadLetter]:
        """The dead-letter queue, oldest first by sent time; see the module docstring for how SQS is read
        without consuming it, and what that costs."""
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        last = decode_cursor(_DEAD_KIND, after, 2) if after is not None else None
        letters = sorted(self._peek(), key=lambda d: (d.sent_at, d.message_id))
        if last is not None:
            letters = [d for d in letters if [d.sent_at, d.message_id] > last]
        page = letters[:limit]
        cursor = (
            encode_cursor(_DEAD_KIND, [page[-1].sent_at, page[-1].message_id])
            if len(letters) > limit
            else None
        )
        return Page[DeadLetter](items=page, next_cursor=cursor)

    def _peek(self) -> list[DeadLetter]:
        """Every message of the dead-letter queue (up to ``peek_max``), each made visible again before
        this returns, even when a receive failed half-way."""
        url = self.dlq_url
        max_receives = self.max_receives
        with aws("read the replay dead-letter queue"):
            waiting = int(
                self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
                    "Attributes"
                ].get("ApproximateNumberOfMessages", 0)
            )
        seen: dict[str, DeadLetter] = {}
        handles: list[str] = []
        try:
            while len(seen) < min(waiting, self.peek_max):
                with aws("read the replay dead-letter queue"):
                    answer = self.sqs.receive_message(
                        QueueUrl=url,
                        MaxNumberOfMessages=QUEUE_BATCH,
                        VisibilityTimeout=self.peek_visibility_s,
                        # A long poll asks every SQS server: a short one may miss the last few messages.
                        WaitTimeSeconds=1,
                        MessageSystemAttributeNames=["SentTimestamp"],
                    )
                messages = answer.get("Messages", [])
                if not messages:
                    break
                for m in messages:
                    handles.append(m["ReceiptHandle"])
                    seen.setdefault(
                        m["MessageId"],
                        DeadLetter(
                            message_id=m["MessageId"],
                            body=m.get("Body", ""),
                            receive_count=max_receives,
                            sent_at=_sent_at(m.get("Attributes", {})),
                        ),
                    )
        finally:
            self._per_ten(url, handles, "release the replay dead letters after reading them", release=True)
        return list(seen.values())
