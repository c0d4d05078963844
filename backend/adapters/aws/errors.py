"""botocore's errors as the kit's :class:`backend.errors.StoreError`, for every AWS call of the adapter.

Callers see one error type whatever the service (S3, DynamoDB, SQS) and a message that says what could not
be done and what AWS answered. Only errors that outlived botocore's own retries get here
(``backend.adapters.aws.clients``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from botocore.exceptions import BotoCoreError, ClientError

from backend.errors import StoreError

# What S3 answers for a key that is not there (GetObject says NoSuchKey; HeadObject has no body: 404).
NOT_FOUND_CODES = ("NoSuchKey", "404", "NotFound")


def store_error(action: str, exc: Exception) -> StoreError:
    """A StoreError saying that ``action`` failed, with AWS's error code and message when it answered."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "error")
        message = err.get("Message", "")
        return StoreError(f"cannot {action}: AWS answered {code}: {message}".rstrip(": "))
    return StoreError(f"cannot {action}: {exc}")


def error_code(exc: ClientError) -> str:
    """The error code AWS answered (``""`` if none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def aws(action: str) -> Iterator[None]:
    """Turns any botocore error raised inside into the StoreError of ``action``."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise store_error(action, exc) from None
