"""Errors a caller may catch. Every message is written for the person at the terminal."""

from __future__ import annotations


class KitError(Exception):
    """Base of the kit's own errors; ``str(err)`` is a complete sentence for the user."""


class StoreError(KitError):
    """A store could not complete a read or write. Nothing of the failed call was acknowledged."""


class WorkspaceError(StoreError):
    """The local workspace is missing, unreadable, not a workspace, or from a newer version of the kit."""


class NotConfigured(StoreError):
    """A store the action needs is not configured; the message names the setting (never a resource)."""


class ReadOnlyError(KitError):
    """A mutating action was asked for in read-only mode."""


class InvalidRequest(KitError):
    """A query or request is malformed (bad cursor, bad window, unknown status...)."""


class Cancelled(KitError):
    """The caller's stop check asked a long read to stop; it changed nothing."""
