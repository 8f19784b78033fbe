"""The fault catalog on the layer-complete slice (issue 27): every structural fault built deeper than the catalog
builds it (ONBOARD_FAULT_LAYERS, default 6 here, so a slice is smaller than the model), checked with the slice and
with every check on the whole model. Each must be found by its check, with its failure mode, and fixed by its
patch, the same both ways; the rest of the run must be equal too.
Run: python bench/audit/faults_slice.py [--layers 6] [--md OUT.md] [NAME ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def outcome(report, fault) -> tuple:
    found = next(c for c in report.checks if c.code == fault.check)
    return (found.status.value, found.diagnosis, found.fix.patch_id if found.fix else None,
            bool(found.fix and found.fix.verified))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    os.environ["ONBOARD_FAULT_LAYERS"] = str(args.layers)
    from onboard.checks import CHECKS
    from onboard.fixtures.faults import FAULTS
    from onboard.harness.runner import run_checks
    from onboard.harness.session import ModelSession

    names = args.names or [n for n, f in FAULTS.items() if f.random_weights]
    lines = [f"# The fault catalog at {args.layers} layers, on the slice and whole", "",
             "| fault | check | expected | sliced (kept layers) | whole | same run |", "|---|---|---|---|---|---|"]
    sliced_rows = same_rows = 0
    for name in names:
        fault = FAULTS[name]
        start = time.perf_counter()
        runs = {}
        for mode in ("auto", "off"):
            try:
                session = ModelSession(model=f"fault:{name}", device="cpu", slice=mode,
                                       **({"max_length": fault.max_length} if getattr(fault, "max_length", None) else {}))
                report = run_checks(session, CHECKS, unsafe_fixes=fault.unsafe)
                runs[mode] = (outcome(report, fault), report, session.slice_map)
            except Exception as exc:  # noqa: BLE001 - the audit says what broke
                runs[mode] = ((f"{type(exc).__name__}: {str(exc)[:80]}",), None, None)
        (s_out, s_rep, s_map), (w_out, w_rep, _) = runs["auto"], runs["off"]
        same = s_rep is not None and w_rep is not None and [
            (c.code, c.status, c.diagnosis, c.fixed) for c in s_rep.checks] == [
            (c.code, c.status, c.diagnosis, c.fixed) for c in w_rep.checks]
        sliced_rows += s_map is not None
        same_rows += same
        kept = f" ({', '.join(map(str, s_map.kept))} of {s_map.total})" if s_map is not None else " (no slice)"
        expected = f"{fault.failure_mode}, {fault.patch or 'no fix'}"
        lines.append(f"| {name} | {fault.check} | {expected} | {' '.join(map(str, s_out))}{kept} | "
                     f"{' '.join(map(str, w_out))} | {'yes' if same else 'NO'} |")
        print(lines[-1], f"{time.perf_counter() - start:.0f} s", flush=True)
    lines += ["", f"{len(names)} faults; {sliced_rows} checked on a slice; {same_rows} with every check equal both ways."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        args.md.write_text(text)
    sys.exit(0 if same_rows == len(names) else 1)


if __name__ == "__main__":
    main()
