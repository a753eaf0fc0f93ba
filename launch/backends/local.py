"""Runs JobSpecs as parallel subprocesses on this machine, within a CPU budget.

Each job's stdout and stderr go to `<workdir>/log.txt` (appended, so a resumed point keeps its
history); one status line per event goes to `out`. Finished points (result.json present) are skipped.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from launch.jobs import JobSpec, is_finished

REPO_ROOT = str(Path(__file__).resolve().parents[2])
_JOINED_VARIABLES = {"XLA_FLAGS": " ", "PYTHONPATH": os.pathsep}  # combined with the parent's value, not replaced
LOG_TAIL_LINES = 8


def available_cpus() -> int:
    """CPUs this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_max_parallel(threads_per_job: int = 1) -> int:
    return max(1, available_cpus() // max(1, threads_per_job))


def threads_per_job(max_parallel: int, cpus: int | None = None) -> int:
    """Threads for each of `max_parallel` jobs: `cpus` when given, else an even share of the machine."""
    return cpus if cpus else max(1, available_cpus() // max(1, max_parallel))


def process_env(job_env: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent's environment plus the job's; XLA_FLAGS and PYTHONPATH are joined, and the repo is importable."""
    env = dict(os.environ if base is None else base)
    for name, value in job_env.items():
        joiner = _JOINED_VARIABLES.get(name)
        parent = env.get(name)
        env[name] = joiner.join((value, parent)) if joiner and parent and parent != value else value
    paths = env.get("PYTHONPATH", "").split(os.pathsep) if env.get("PYTHONPATH") else []
    if REPO_ROOT not in paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, REPO_ROOT])
    return env


@dataclasses.dataclass
class _Running:
    job: JobSpec
    index: int
    process: subprocess.Popen
    log: IO[str]
    started: float


def _status(out: IO[str], index: int, total: int, word: str, job: JobSpec, detail: str = "") -> None:
    width = len(str(total))
    out.write(f"[{index:>{width}}/{total}] {word:<8} {job.name}{'  ' + detail if detail else ''}\n")
    out.flush()


def _start(job: JobSpec, index: int, total: int, out: IO[str], extra_env: Mapping[str, str]) -> _Running:
    os.makedirs(job.workdir, exist_ok=True)
    log = open(job.log_path, "a", encoding="utf-8")  # closed when the job ends
    log.write(f"# {datetime.datetime.now().isoformat(timespec='seconds')} {shlex.join(job.command)}\n")
    log.flush()
    process = subprocess.Popen(job.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=process_env({**job.env, **extra_env}))
    _status(out, index, total, "started", job, f"log: {job.log_path}")
    return _Running(job, index, process, log, time.monotonic())


def _log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            tail = f.readlines()[-lines:]
    except OSError:
        return ""
    return "".join("    | " + line.rstrip("\n") + "\n" for line in tail)


def run_local(jobs: Sequence[JobSpec], *, max_parallel: int | None = None, out: IO[str] = sys.stdout,
              poll_seconds: float = 0.5) -> int:
    """Runs the unfinished jobs, at most `max_parallel` at a time; returns how many failed."""
    max_parallel = max(1, max_parallel or default_max_parallel())
    total = len(jobs)
    queue = []
    for index, job in enumerate(jobs, 1):
        if is_finished(job.workdir):
            _status(out, index, total, "skipped", job, "(result.json exists)")
        else:
            queue.append((index, job))
    # Jobs that share a GPU must not each grab most of its memory.
    shared_gpu = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if max_parallel > 1 else {}
    running: list[_Running] = []
    failed = 0
    try:
        while queue or running:
            while queue and len(running) < max_parallel:
                index, job = queue.pop(0)
                extra = shared_gpu if job.resources.accelerator == "gpu" else {}
                running.append(_start(job, index, total, out, extra))
            time.sleep(poll_seconds)
            for item in list(running):
                code = item.process.poll()
                if code is None:
                    continue
                running.remove(item)
                item.log.close()
                seconds = time.monotonic() - item.started
                if code == 0:
                    _status(out, item.index, total, "finished", item.job, f"in {seconds:.1f} s")
                else:
                    failed += 1
                    _status(out, item.index, total, "FAILED", item.job,
                            f"exit {code} after {seconds:.1f} s; log: {item.job.log_path}")
                    out.write(_log_tail(item.job.log_path))
                    out.flush()
    except KeyboardInterrupt:
        for item in running:
            item.process.terminate()
        for item in running:
            try:
                item.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                item.process.kill()
            item.log.close()
            _status(out, item.index, total, "stopped", item.job, "(interrupted; re-run the sweep to resume)")
        raise
    return failed
