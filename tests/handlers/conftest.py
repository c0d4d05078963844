"""Fixtures of the replay and processor handler tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.handlers.support import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    """A local workspace filled through the ingest service, configured for the handlers."""
    opened = Workspace(tmp_path / "ws")
    try:
        yield opened
    finally:
        opened.close()
