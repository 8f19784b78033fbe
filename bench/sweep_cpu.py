"""The whole architecture sweep, timed: every causal-LM and image-text-to-text architecture of the installed
transformers, built tiny with random weights, through the checks, two isolated processes at a time.

Target: under 10 minutes on a 2-core CPU box. Prints the wall time, the counts by outcome and the reasons
runs are not ready. Resumes from OUT if it exists (then the time covers only what was left).
Run: python bench/sweep_cpu.py [OUT.jsonl] [--workers N] [--timeout S]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="bench/sweep.jsonl", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--layers", type=int, default=None,
                        help="layers of each tiny model (tiny:ARCH:N; default two, and one of every layer type)")
    parser.add_argument("--slice", choices=("auto", "off"), default="auto",
                        help="the code-path checks on the layer-complete slice (auto) or every check whole (off)")
    args = parser.parse_args()

    from onboard.reports.matrix import load_rows, reasons
    from onboard.sweep import architectures, read_records, run_sweep

    archs = architectures()
    before = len([a for a in read_records(args.out) if a in archs])
    print(f"{len(archs)} architectures ({Counter(archs.values())}); {before} already in {args.out}; "
          f"{args.workers} workers on {os.cpu_count()} cores, {args.timeout:g} s limit each", flush=True)
    start = time.perf_counter()

    def done(record) -> None:
        print(f"{time.perf_counter() - start:7.1f} s  {record.arch:<28} {record.outcome:<17} {record.seconds:6.1f} s  "
              f"{record.reason[:100]}", flush=True)

    new = run_sweep(archs, args.out, workers=args.workers, timeout=args.timeout, on_done=done,
                    task_options={"layers": args.layers, "slice": args.slice})
    wall = time.perf_counter() - start
    rows = [r for r in load_rows([args.out]) if r.name in archs]
    print(f"\nwall {wall:.0f} s for {len(new)} architectures "
          f"({wall / max(1, len(new)):.2f} s each, sum of per-architecture times {sum(r.seconds for r in new):.0f} s)")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in Counter(r.outcome for r in rows).most_common()))
    by_task = Counter((archs[r.name], r.outcome) for r in rows)
    for task in sorted(set(archs.values())):
        print(f"  {task}: " + ", ".join(f"{o} {n}" for (t, o), n in sorted(by_task.items()) if t == task))
    print("why not ready:")
    for reason, names in reasons(rows).items():
        print(f"  {len(names):3d}  {reason[:140]}  ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")
    slow = sorted(new, key=lambda r: -r.seconds)[:5]
    print("slowest: " + ", ".join(f"{r.arch} {r.seconds:.0f} s" for r in slow))


if __name__ == "__main__":
    sys.exit(main())
