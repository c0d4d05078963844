"""Run one command and record its wall time and resource usage, that command's alone.

    python -S bench/measure.py RESULT.json CMD [ARG...]

Why a separate small process: on Linux a child's ``ru_maxrss`` starts from the RSS of the process that
forked it (the high-water mark of the forked address space is carried across ``exec``), so a command
started directly by the harness, which holds hundreds of MiB of precomputed rows, would report at least
that much. Forked from this tiny process instead, the figure is the command's own.

``ru_maxrss`` is the peak of the largest single process (the command or one of its reaped children). A
command that runs worker processes holds more than that at once, so the process tree is also sampled
ten times a second: the peak of the sum of its processes' PSS (proportional set size: pages shared
between processes are split between them, not counted twice), and the most processes seen at once.

The command's stdin, stdout and stderr are this process's; the exit status is the command's.
"""

import json
import os
import sys
import threading
import time

SAMPLE_EVERY_S = 0.1


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def _pss_kib(pid: int) -> int:
    """Proportional set size of one process in KiB (its RSS where smaps_rollup is unavailable)."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return 0


class TreeSampler(threading.Thread):
    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peak_pss_kib = 0
        self.max_processes = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_EVERY_S):
            tree, todo = [], [self.root]
            while todo:
                pid = todo.pop()
                tree.append(pid)
                todo.extend(_children(pid))
            total = sum(_pss_kib(pid) for pid in tree)
            if total:  # zero once the process has gone
                self.samples += 1
                self.peak_pss_kib = max(self.peak_pss_kib, total)
                self.max_processes = max(self.max_processes, len(tree))


def main() -> int:
    result_path, cmd = sys.argv[1], sys.argv[2:]
    if not cmd:
        sys.stderr.write("usage: measure.py RESULT.json CMD [ARG...]\n")
        return 2
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: become the command
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    sampler = TreeSampler(pid)
    sampler.start()
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    code = os.waitstatus_to_exitcode(status)
    with open(result_path, "w") as f:
        json.dump(
            {
                "wall_s": wall,
                "user_s": usage.ru_utime,  # the command and every child it waited for
                "sys_s": usage.ru_stime,
                "max_rss_kib": usage.ru_maxrss,  # kilobytes on Linux; the largest single process
                "tree_peak_pss_kib": sampler.peak_pss_kib,
                "tree_max_processes": sampler.max_processes,
                "tree_samples": sampler.samples,
                "returncode": code,
            },
            f,
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
