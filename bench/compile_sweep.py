"""COMPILE001 on the tiny architectures tests/test_sweep.py holds to no false alarm, on the CPU (dynamo +
AOTAutograd), with the checks it needs before it (LORA001, PACK001 and their fixes). One line per architecture.
Run: python bench/compile_sweep.py [ARCH ...]   (about 20-45 s per architecture on a 2-core machine)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from onboard.checks import CompileCheck, LoraCheck, PackingCheck  # noqa: E402
from onboard.harness.runner import run_checks  # noqa: E402
from onboard.harness.session import ModelSession  # noqa: E402


def main(archs: list[str]) -> None:
    if not archs:
        from test_sweep import CLEAN, UPSTREAM

        archs = CLEAN + sorted(UPSTREAM)
    for arch in archs:
        start = time.perf_counter()
        try:
            session = ModelSession(model=f"tiny:{arch}", device="cpu", torch_compile=True)
            check = next(c for c in run_checks(session, [LoraCheck, PackingCheck, CompileCheck]).checks
                         if c.code == "COMPILE001")
            row = {"arch": arch, "status": check.status.value, "diagnosis": check.diagnosis,
                   "message": check.message[:300], "breaks": check.evidence.get("graph_breaks", [])[:3],
                   "graphs": getattr(check.measurements.get("graphs"), "value", None)}
        except Exception as exc:  # noqa: BLE001 - one architecture's crash is its row
            row = {"arch": arch, "status": "CRASH", "message": f"{type(exc).__name__}: {str(exc)[:200]}"}
        row["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
