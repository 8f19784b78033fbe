"""PACK001 per attention backend, in the model's dtype (bf16 on GPU): which conventions leak, and the noise
left once samples are isolated, to set PACK001's tolerance from.

For each model and backend: PACK001 as shipped (leak per convention: the worst per-sample loss change
against the sample run alone), then PACK001 again with packing.no_cache_no_mask applied, where every
convention is isolated, so what remains is the numerical noise of a packed row against a lone sample.
The tolerance must sit well above the largest noise and below the smallest leak.
Run: python bench/packing_backends.py [MODEL ...]  (default: shipped 7-8B configs, random weights)
"""

from __future__ import annotations

import json
import sys

import torch

from onboard.checks.packing import CONVENTIONS, PackingCheck
from onboard.harness.session import ModelSession
from onboard.patches import get_patch

BACKENDS = ["eager", "sdpa", "flex_attention", "flash_attention_4"]


def run(session) -> dict:
    session.invalidate()  # the reference losses of this backend
    res = PackingCheck().run(session)
    return {name: res.measurements[f"max_abs_diff_{name}"].value for name in CONVENTIONS
            if f"max_abs_diff_{name}" in res.measurements} | {
        "noise": res.measurements["noise"].value, "tolerance": res.measurements["tolerance"].value,
        "diagnosis": res.diagnosis}


def main(models: list[str]) -> None:
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"# {card}, torch {torch.__version__}", flush=True)
    for name in models:
        session = ModelSession(model=name)
        for backend in BACKENDS:
            row = {"card": card, "model": name, "dtype": str(session.dtype).removeprefix("torch."),
                   "backend": backend}
            try:
                session.model.set_attn_implementation(backend)
            except (ImportError, ValueError) as exc:
                print(json.dumps({**row, "error": str(exc).splitlines()[0][:200]}), flush=True)
                continue
            try:
                row["leak"] = run(session)
                with get_patch("packing.no_cache_no_mask").apply(session.model):
                    row["noise_after_fix"] = run(session)
            except Exception as exc:  # noqa: BLE001 - a backend that cannot run is a finding of the bench
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            print(json.dumps(row), flush=True)
        del session
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:] or ["config:llama3-8b", "config:qwen2.5-7b", "config:gemma3-4b"])
