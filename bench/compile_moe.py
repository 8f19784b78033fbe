"""COMPILE001 and MOE001 on released shapes (random weights, bf16, CUDA): the compiled/eager step-time ratio, and
each experts implementation's step time with the one MOE001 chooses. Prints one JSON line per model.
Run: python bench/compile_moe.py config:llama3-8b config:gemma3-4b config:qwen3-30b-a3b-12l
"""

from __future__ import annotations

import json
import sys
import time

import torch

from onboard.checks import CompileCheck, LoraCheck, MoeCheck, PackingCheck
from onboard.harness.runner import run_checks
from onboard.harness.session import ModelSession


def main(specs: list[str]) -> None:
    for spec in specs:
        start = time.perf_counter()
        moe = "moe" in spec or "a3b" in spec
        # an MoE model with LoRA on its experts breaks the graph in every MoE layer (PEFT's parametrization): its
        # compile is measured by the tiny-model tests; here its experts kernels are
        session = ModelSession(model=spec, device="cuda", torch_compile=not moe)
        checks = [LoraCheck, PackingCheck] + ([MoeCheck] if moe else [CompileCheck])
        report = run_checks(session, checks)
        row = {"model": spec, "card": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "seconds": round(time.perf_counter() - start, 1)}
        for check in report.checks:
            row[check.code] = {"status": check.status.value, "diagnosis": check.diagnosis, "message": check.message,
                               "fix": None if check.fix is None else {"patch": check.fix.patch_id,
                                                                     "verified": check.fix.verified},
                               "measurements": {k: m.value for k, m in check.measurements.items()},
                               "evidence": {k: v for k, v in check.evidence.items() if k != "traceback"}}
        print(json.dumps(row, default=str), flush=True)
        del session, report
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:] or ["config:llama3-8b", "config:gemma3-4b", "config:qwen3-30b-a3b-12l"])
