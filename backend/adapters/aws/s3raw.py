"""Raw event bytes in S3: :class:`backend.ports.RawStore` on the raw bucket.

An object is written once and never replaced: every put carries ``IfNoneMatch='*'``, so S3 itself refuses
a second write of a key (invariant 3 of DESIGN.md) and the answer says EXISTS. Each object's sha256 goes
in its metadata, so a duplicate's bytes can be compared with a HEAD request instead of a download.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError

from backend.adapters.aws.connection import AwsConnection, transient
from backend.adapters.aws.errors import NOT_FOUND_CODES, error_code, store_error
from backend.errors import StoreError
from backend.identity import sha256_hex
from backend.ports import RawObject, RawPut, RawPutStatus


class S3RawStore(AwsConnection):
    """:class:`backend.ports.RawStore` on the stack's raw bucket."""

    def put_new(self, objects: Sequence[RawObject]) -> list[RawPut]:
        # Objects with the same key go in order (the earlier wins); different keys go concurrently.
        by_key: dict[str, list[int]] = {}
        for i, obj in enumerate(objects):
            by_key.setdefault(obj.key, []).append(i)
        results: list[RawPut | None] = [None] * len(objects)

        def put_group(indices: list[int]) -> None:
            first = objects[indices[0]]
            put = self._put_one(first)
            results[indices[0]] = put
            for i in indices[1:]:
                stored = put.stored_sha256 if put.status is RawPutStatus.CREATED else None
                results[i] = RawPut(objects[i].key, RawPutStatus.EXISTS, stored)

        self.map_concurrently(put_group, list(by_key.values()))
        return [r for r in results if r is not None]

    def _put_one(self, obj: RawObject) -> RawPut:
        for attempt in range(5):
            try:
                self.s3.put_object(
                    Bucket=self.t.bucket,
                    Key=obj.key,
                    Body=obj.data,
                    IfNoneMatch="*",
                    ServerSideEncryption="AES256",
                    ContentType="application/json",
                    Metadata={"sha256": obj.sha256},
                )
                return RawPut(obj.key, RawPutStatus.CREATED, obj.sha256)
            except ClientError as exc:
                code = error_code(exc)
                if code in ("PreconditionFailed", "412"):
                    return RawPut(obj.key, RawPutStatus.EXISTS, None)
                if code == "ConditionalRequestConflict" and attempt < 4:  # a concurrent put of the key
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if transient(exc) and attempt < 4:
                    # Tried again by the kit: if the failed put did store the bytes, this one is refused
                    # (412) and the index settles whose bytes are there (Claim.UNVERIFIED).
                    self.backoff.cut()
                    self.retry_sleep(min(2.0, 0.05 * 2**attempt))
                    continue
                raise store_error(f"store raw event {obj.key}", exc) from None
            except BotoCoreError as exc:
                if attempt < 4:
                    self.backoff.cut()
                    self.retry_sleep(min(2.0, 0.05 * 2**attempt))
                    continue
                raise store_error(f"store raw event {obj.key}", exc) from None
        raise StoreError(f"cannot store raw event {obj.key}: concurrent writes kept conflicting")

    def get(self, key: str) -> bytes | None:
        try:
            body = self.s3.get_object(Bucket=self.t.bucket, Key=key)["Body"]
            return bytes(body.read())
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                return None
            raise store_error(f"read raw event {key}", exc) from None
        except BotoCoreError as exc:
            raise store_error(f"read raw event {key}", exc) from None

    def sha256(self, key: str) -> str | None:
        try:
            head = self.s3.head_object(Bucket=self.t.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                return None
            raise store_error(f"read raw event {key}", exc) from None
        except BotoCoreError as exc:
            raise store_error(f"read raw event {key}", exc) from None
        stored = head.get("Metadata", {}).get("sha256")
        if stored:
            return str(stored)
        data = self.get(key)  # written by another tool: hash the bytes
        return None if data is None else sha256_hex(data)
