"""Fixtures of the AWS tests: a moto server on 127.0.0.1, for what must cross the wire."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto.moto_server.threaded_moto_server import ThreadedMotoServer


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """The URL of a moto server on a free port of 127.0.0.1, shared by the tests of one module."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
