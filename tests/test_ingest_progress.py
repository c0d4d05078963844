"""What `pik ingest` shows while it runs, as a person sees it: a bar on a terminal (a real pseudo-terminal
here), nothing but the summary when piped, one message on Ctrl-C; and a file that starts with a UTF-8 byte
order mark."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

from tests.test_cli import ROOT, event, run

BOM = b"\xef\xbb\xbf"


class Terminal:
    """`python -m pik_console.cli ARGS` with stdout and stderr on an 80x24 pseudo-terminal; all it wrote."""

    def __init__(self, *argv: str, stdin: bytes | None = None) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pik_console.cli", *argv],
            cwd=ROOT,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=slave,
            stderr=slave,
            env={**env, "TERM": "xterm-256color"},
        )
        os.close(slave)
        self._master = master
        self.output = b""
        if stdin is not None:  # fed from a thread: the pipe and the terminal must not block each other
            threading.Thread(target=self._feed, args=(stdin,), daemon=True).start()

    def _feed(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        with self.proc.stdin:
            self.proc.stdin.write(data)

    def read_until(self, pattern: bytes, timeout: float = 120) -> bool:
        """Read until the output matches ``pattern`` (True) or the program's end (False)."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.output):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout} s in {self.output[-2000:]!r}")
            ready, _, _ = select.select([self._master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: every holder of the terminal's other end is gone
                chunk = b""
            if not chunk:
                return False
            self.output += chunk
        return True

    def finish(self) -> tuple[int, str]:
        """The exit status and the output as text, without its colours and cursor moves."""
        self.read_until(rb"(?!x)x")  # matches nothing: read to the end
        os.close(self._master)
        text = self.output.decode("utf-8", "replace")
        return self.proc.wait(timeout=60), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def events_file(path: Path, n: int) -> Path:
    path.write_text(
        "".join(
            event(f"u{i % 500}", t=f"2025-12-28T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z") + "\n"
            for i in range(n)
        )
    )
    return path


def test_on_a_terminal_a_file_shows_lines_bytes_percent_rate_and_eta_then_the_summary(tmp_path: Path) -> None:
    src = events_file(tmp_path / "in.jsonl", 3000)
    term = Terminal("ingest", str(src), "--workspace", str(tmp_path / "ws"), "--batch-size", "200")
    code, out = term.finish()
    assert code == 0, out
    # The bar's last frame (drawn before it is erased) has every field, for the whole file.
    size_kib = f"{src.stat().st_size / 2**10:.1f}"
    frame = re.search(r"ingest .*100%\s+3,000 lines\s+(\S+)/(\S+) KiB\s+[\d,]+/s\s+ETA\s+\S+", out)
    assert frame, out
    assert frame.group(1) == frame.group(2) == size_kib
    assert all(len(line) <= 80 for line in out.replace("\r", "\n").split("\n") if "ingest " in line)
    assert "Traceback" not in out
    # Then the summary, after the bar (which is erased: it does not stay above the summary).
    summary = out[frame.end() :]
    assert re.search(r"[\r\n]Read 3,000 lines from \S+ into \S+ in [\d.]+ s", summary), out
    assert re.search(r"accepted +3,000\r?\n", summary), out


def test_on_a_terminal_stdin_shows_lines_and_rate_without_a_total(tmp_path: Path) -> None:
    src = events_file(tmp_path / "in.jsonl", 1000)
    term = Terminal("ingest", "-", "--workspace", str(tmp_path / "ws"), stdin=src.read_bytes())
    code, out = term.finish()
    assert code == 0, out
    assert re.search(r"ingest\s+1,000 lines\s+[\d.]+ MiB\s+[\d,]+ lines/s", out), out
    assert "%" not in out and "ETA" not in out
    assert "Read 1,000 lines from -" in out


def test_piped_output_has_no_carriage_returns_only_the_summary(tmp_path: Path) -> None:
    src = events_file(tmp_path / "in.jsonl", 3000)
    done = run("ingest", str(src), "--workspace", str(tmp_path / "ws"), "--batch-size", "200")
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout and "\r" not in done.stderr and "\x1b" not in done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("Read 3,000 lines from")


def test_a_utf8_byte_order_mark_at_the_start_of_a_file_is_not_part_of_line_1(tmp_path: Path) -> None:
    """Line 1 is ACCEPTED with the event id it has without the BOM, and its raw bytes are the line's content
    without the BOM (the BOM is the file's encoding mark, like the newline is its line separator)."""
    lines = [event("a").encode(), event("b").encode()]
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(b"\n".join(lines) + b"\n")
    marked = tmp_path / "marked.jsonl"
    marked.write_bytes(BOM + b"\r\n".join(lines) + b"\r\n")

    def ingested(src: Path, ws: str) -> dict[str, dict[str, object]]:
        done = run("ingest", str(src), "--workspace", ws, "--json")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert (summary["accepted"], summary["rejected"], summary["lines"]) == (2, 0, 2), summary
        items = {}
        for entity in ("a", "b"):
            found = run("events", "--entity", entity, "--workspace", ws, "--json")
            (item,) = json.loads(found.stdout)["items"]
            items[entity] = item
        return items

    without, with_bom = ingested(plain, str(tmp_path / "ws1")), ingested(marked, str(tmp_path / "ws2"))
    for entity, body in zip(("a", "b"), lines, strict=True):
        assert with_bom[entity]["status"] == "ACCEPTED"
        assert with_bom[entity]["event_id"] == without[entity]["event_id"]
        assert with_bom[entity]["raw_sha"] == without[entity]["raw_sha"] == hashlib.sha256(body).hexdigest()
        assert with_bom[entity]["raw_size"] == len(body)
    # A re-run of the BOM file resumes: line 1 is recognised as stored.
    again = json.loads(run("ingest", str(marked), "--workspace", str(tmp_path / "ws2"), "--json").stdout)
    assert again["already_ingested"] == 2 and again["accepted"] == again["duplicate"] == 0
    # A BOM anywhere but the start of the input is data, and rejected as before.
    inner = tmp_path / "inner.jsonl"
    inner.write_bytes(lines[0] + b"\n" + BOM + lines[1] + b"\n")
    done = run("ingest", str(inner), "--workspace", str(tmp_path / "ws3"), "--json")
    summary = json.loads(done.stdout)
    assert summary["rejected"] == 1 and "byte order mark" in summary["rejections"][0]["reason"]


def test_ctrl_c_on_a_terminal_prints_one_message_exits_130_and_a_rerun_resumes(tmp_path: Path) -> None:
    src = events_file(tmp_path / "big.jsonl", 60_000)
    ws = str(tmp_path / "ws")
    term = Terminal("ingest", str(src), "--workspace", ws, "--batch-size", "1000")
    # Interrupt once the bar shows stored lines: mid-run, whatever the machine's speed.
    if term.read_until(rb"[1-9][\d,]* lines"):
        term.proc.send_signal(signal.SIGINT)
    code, out = term.finish()
    assert code == 130, out
    assert out.count("interrupted") == 1 and "Traceback" not in out, out
    assert "KeyboardInterrupt" not in out
    message = out[out.index("pik ingest: interrupted; ") :]
    assert "resumes: it skips every stored line" in message
    stored = int(message.split("interrupted; ")[1].split(" of the")[0].replace(",", ""))
    assert 0 < stored < 60_000
    done = run("ingest", str(src), "--workspace", ws, "--json")
    summary = json.loads(done.stdout)
    assert summary["already_ingested"] == stored and summary["duplicate"] == 0
    assert summary["accepted"] + summary["already_ingested"] == 60_000 == summary["lines"]
