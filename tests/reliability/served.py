"""A real `pik serve` process for the reliability suites: started as a user starts it, its output kept in
files (a pipe nobody reads would fill and stall it), stopped with Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pik() -> list[str]:
    """The `pik` command of this environment."""
    script = Path(sys.executable).parent / "pik"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pik_console.cli"]


def serve_env(**extra: str) -> dict[str, str]:
    """This environment without the settings that would change what `pik serve` does, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DRY_RUN", "PIK_BACKEND", "PIK_READ_ONLY", "PIK_SERVE_TOKEN", "PIK_WORKSPACE")
    }
    return {**env, **extra}


@dataclass
class Served:
    """A running `pik serve`: its process, address, output files and (when the caller sets it) workspace."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    out: Path
    err: Path
    workspace: Path | None = None

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_serve(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Served:
    """Start `pik serve ARGS` and wait for its "listening on" line (it fails the test if the process ends)."""
    out, err = tmp / "serve.out", tmp / "serve.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(
            [*pik(), "serve", *args], stdout=fo, stderr=fe, cwd=ROOT, env=env or serve_env()
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"listening on (http://\S+?:(\d+)) ", out.read_text(errors="replace"))
        if match:
            return Served(proc, match.group(1), int(match.group(2)), out, err)
        if proc.poll() is not None:
            raise AssertionError(f"pik serve exited {proc.returncode}: {err.read_text(errors='replace')}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError("pik serve did not start listening")
