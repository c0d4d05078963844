"""The ``pik`` command line: ``main`` lists every command (pik_console/cli/main.py); one module per command
or family of commands; the helpers they share in ``common``."""

from pik_console.cli.main import main

__all__ = ["main"]
