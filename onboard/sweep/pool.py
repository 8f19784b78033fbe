"""Runs one task per architecture, each in its own process forked from a warm fork server, `workers` at a
time. A process that outlives its time limit is killed (TIMEOUT); one that dies without a result is a
CRASH. Every result is appended to a JSONL file as it arrives, so a sweep resumes where it stopped."""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from dataclasses import asdict, dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

from onboard.harness.errors import BadInput

DEFAULT_TASK = "onboard.sweep.worker:check_architecture"
OUTCOMES = ("READY", "READY_WITH_FIXES", "NOT_READY", "INCONCLUSIVE", "NOT_APPLICABLE", "BUILD_ERROR", "NEEDS_DEPENDENCY", "TIMEOUT",
            "CRASH")


@dataclass
class SweepRecord:
    arch: str
    task: str  # causal-lm, image-text-to-text or text2text (onboard.sweep.archs)
    outcome: str  # one of OUTCOMES
    reason: str  # blocking findings, the patches that fixed it, or why it did not run
    seconds: float
    report: dict[str, Any] | None = None  # the RunReport as JSON, when the checks ran

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)


def read_records(path: Path) -> dict[str, SweepRecord]:
    """The records already in a sweep file. A line cut off by a killed sweep is dropped from the file."""
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):  # the last write was interrupted: keep the complete lines
        text = text[: text.rfind("\n") + 1]
        path.write_text(text, encoding="utf-8")
    records = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = SweepRecord(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as exc:
            raise BadInput(f"{path}:{number}: not a sweep record ({exc})") from None
        records[record.arch] = record
    return records


def run_sweep(
    archs: dict[str, str],
    out: Path,
    *,
    workers: int = 2,
    timeout: float = 60.0,
    task: str = DEFAULT_TASK,
    task_options: dict[str, Any] | None = None,
    preload: tuple[str, ...] = ("onboard.sweep.warm",),
    memory_limit: int | None = None,
    on_start: Callable[[str], None] = lambda _: None,
    on_done: Callable[[SweepRecord], None] = lambda _: None,
) -> list[SweepRecord]:
    """Run `task` (module:function, called with the architecture name and `task_options`) for every architecture not yet in
    `out`; returns the new records. `preload` modules are imported once by the fork server; `memory_limit`
    bytes of address space per child (default 70 % of RAM shared by the workers; 0: none)."""
    done = read_records(out)
    pending = deque(a for a in archs if a not in done)
    if not pending:
        return []
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    threads = max(1, (os.cpu_count() or 1) // workers)
    # each child may use this much address space: a model whose default tower is huge fails with MemoryError
    # in its own process instead of waking the kernel's OOM killer, which may pick any process on the machine
    memory = int(_total_memory() * 0.7 / workers) if memory_limit is None else memory_limit
    running: dict[str, tuple[Any, Any, float]] = {}  # arch -> (process, connection, start)
    new: list[SweepRecord] = []
    out.parent.mkdir(parents=True, exist_ok=True)

    def finish(arch: str, outcome: str, reason: str, report=None) -> None:
        proc, conn, start = running.pop(arch)
        conn.close()
        proc.join(timeout=5)
        record = SweepRecord(arch, archs[arch], outcome, reason, round(time.monotonic() - start, 2), report)
        with out.open("a", encoding="utf-8") as f:
            f.write(record.to_json() + "\n")
        new.append(record)
        on_done(record)

    try:
        while pending or running:
            while pending and len(running) < workers:
                arch = pending.popleft()
                receiver, sender = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(task, arch, sender, threads, memory, task_options or {}), name=f"onboard-sweep-{arch}",
                                   daemon=False)  # a daemon could not start the processes a check may need
                proc.start()
                sender.close()  # the child holds the only sending end: EOF when it dies
                running[arch] = (proc, receiver, time.monotonic())
                on_start(arch)
            now = time.monotonic()
            next_deadline = min(start + timeout for _, _, start in running.values())
            ready = wait([conn for _, conn, _ in running.values()], timeout=max(0.0, next_deadline - now))
            for arch, (proc, conn, start) in list(running.items()):
                if conn in ready:
                    try:
                        result = conn.recv()
                    except (EOFError, OSError):
                        proc.join(timeout=5)
                        finish(arch, "CRASH", _exit_reason(proc.exitcode))
                        continue
                    finish(arch, result["outcome"], result["reason"], result.get("report"))
                elif time.monotonic() - start > timeout:
                    proc.kill()
                    finish(arch, "TIMEOUT", f"no result within {timeout:g} s")
    finally:
        for proc, conn, _ in running.values():  # interrupted: leave no orphan behind
            proc.kill()
            proc.join(timeout=5)
    return new


def _child(task: str, arch: str, conn, threads: int, memory: int, options: dict) -> None:
    import resource

    import torch

    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    torch.set_num_threads(threads)
    module, _, name = task.partition(":")
    fn = getattr(importlib.import_module(module), name)
    try:
        result = fn(arch, **options)
    except Exception as exc:  # noqa: BLE001 - the task's own bug still gives the architecture a line
        result = {"outcome": "CRASH", "reason": f"{type(exc).__name__}: {str(exc)[:300]}", "report": None}
    conn.send(result)
    conn.close()


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"the process died of {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"the process exited with code {code} and no result"
