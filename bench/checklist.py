"""`onboard check` against the floor the arithmetic sets, both timed as whole processes (imports included).

The floor is what a check cannot avoid on the whole model (issue 27): load it, wrap it in LoRA, run LOSS001's
forwards (every sample alone, no gradient) and one full training step (TRAIN001's: the four shortest samples as
one packed row, forward and backward). Everything else `onboard check` does runs on the layer-complete slice
(onboard.harness.slice) or is onboard's own cost. Both run in processes of their own, after a throwaway load that
warms the machine's disk caches (and the converted copy of a GGUF); the check is the CLI as a user runs it.
Targets: on one H100/H200, `onboard check config:llama3-8b` with every check (COMPILE001 included, on by default
with CUDA) <= 1.3x the floor and under 45 s wall; on the 2-core CPU, bench/check_cpu.py.
Run: python bench/checklist.py [MODEL] [--slice off]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def floor_passes(session) -> float:
    """LOSS001's forwards and TRAIN001's step on the whole model, bare."""
    import torch

    model, dev = session.train_model, session.device
    start = time.perf_counter()
    with torch.no_grad():  # initial_loss: every example alone
        for ex in session.examples:
            model(input_ids=torch.tensor([ex.input_ids], device=dev), use_cache=False)
    shortest = sorted(session.examples, key=len)[:4]
    flat = [t for ex in shortest for t in ex.input_ids]  # train_step: the 4 samples as one packed row
    positions = [p for ex in shortest for p in range(len(ex))]
    ids = torch.tensor([flat], device=dev)
    model(input_ids=ids, position_ids=torch.tensor([positions], device=dev), labels=ids,
          use_cache=False).loss.backward()
    model.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - start


def floor_main(model: str | None) -> None:
    """In a fresh process: imports, load, LoRA, the floor's passes; prints the split."""
    t0 = time.perf_counter()
    import torch  # noqa: F401
    from peft import get_peft_model

    from onboard.harness.session import ModelSession

    imports = time.perf_counter() - t0
    session = ModelSession(model=model, slice="off")
    load = time.perf_counter() - t0 - imports
    session.set_adapter(get_peft_model(session.model, session.lora_config()))
    passes = floor_passes(session)
    print(f"FLOOR {imports} {load} {passes}")


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - start, out


def main(model: str | None, extra: list[str]) -> None:
    onboard = shutil.which("onboard") or [sys.executable, "-m", "onboard.cli"]
    onboard = [onboard] if isinstance(onboard, str) else onboard
    name = model or "the default model"
    warm = subprocess.run([sys.executable, __file__, "--floor", model or ""], capture_output=True, text=True)
    if warm.returncode:
        raise SystemExit(f"the throwaway floor run failed: {warm.stderr[-2000:]}")
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        check_wall, out = timed([*onboard, "check", *([model] if model else []), "-q", "--json", str(report_path),
                                 *extra])
        if out.returncode not in (0, 1):
            raise SystemExit(f"onboard check exited {out.returncode}: {out.stderr[-3000:]}")
        report = json.loads(report_path.read_text())
    floor_wall, out = timed([sys.executable, __file__, "--floor", model or ""])
    imports, load, passes = map(float, next(ln for ln in out.stdout.splitlines() if ln.startswith("FLOOR ")).split()[1:])
    env, info = report["environment"], report["model"]
    print(f"model {info['id']} ({info['dtype']}) on {env['device']} {env.get('gpu') or ''}, torch {env['torch']}, "
          f"transformers {env['transformers']}")
    print(f"slice: {info.get('slice')}")
    print("onboard check split (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings"].items()))
    for c in report["checks"]:
        print(f"  {c['code']:<10} {c['name']:<13} {c['duration_s']:7.2f} s  {c['status']:<5} on {c.get('ran_on')}")
    print(f"onboard check {name}: {check_wall:6.1f} s wall, verdict {report['verdict']}")
    print(f"floor (imports {imports:.1f} + load {load:.1f} + LOSS001 forwards and one training step {passes:.1f}): "
          f"{floor_wall:6.1f} s wall")
    gpu = env["device"].startswith("cuda")
    print(f"ratio check / floor = {check_wall / floor_wall:.2f}  (target <= {1.3 if gpu else 1.5})"
          + (f"; check under 45 s: {'met' if check_wall < 45 else 'MISSED'}" if gpu else ""))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--floor"]:
        floor_main(sys.argv[2] or None)
    else:
        args = sys.argv[1:]
        main(args[0] if args and not args[0].startswith("-") else None,
             args[1:] if args and not args[0].startswith("-") else args)
