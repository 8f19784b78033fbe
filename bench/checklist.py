"""Time split of one `onboard check` run, and its overhead over the bare passes it needs.

The ratio compares the run (load + checks) with load + the same forward/backward passes done bare, on
the same model and batches: what the checklist costs beyond the arithmetic it cannot avoid. The bare
passes run in a process of their own, so both sides pay the same first-call costs (CUDA context, kernel
compilation), after a throwaway load that warms the machine's disk caches for both.
Targets: <= 1.5 on the 2-core CPU (SmolLM2), <= 1.3 on a GPU (an 8B shape in bf16, config:llama3-8b).
Run: python bench/checklist.py [MODEL]
"""

from __future__ import annotations

import sys
import time

import torch

from onboard.checks import CHECKS
from onboard.checks.packing import CONVENTIONS, ROW_SAMPLES, first_samples
from onboard.harness.data import pack
from onboard.harness.forward import PackedBatch, batch_tensors
from onboard.harness.runner import run_checks
from onboard.harness.session import ModelSession


def bare_passes(session, rerun_packing: bool) -> float:
    """The passes the checklist runs, without the checks around them."""
    model, dev = session.train_model, session.device
    start = time.perf_counter()
    ex = min(session.examples, key=len)  # lora: one forward and backward
    model(**batch_tensors([ex], dev, session.pad_id), use_cache=False).loss.backward()
    with torch.no_grad():  # initial_loss: every example alone
        for ex in session.examples:
            model(input_ids=torch.tensor([ex.input_ids], device=dev), use_cache=False)
        rows = [r for r in pack(session.examples, session.pack_length) if len(set(r.sample)) > 1][:1]
        rows = [first_samples(rows[0], session.examples, ROW_SAMPLES)]
        batch = PackedBatch.from_rows(rows, dev, session.pad_id)
        twice = {k: v.repeat(2, 1) for k, v in (("input_ids", batch.input_ids), ("position_ids", batch.position_ids))}
        for _ in range(2 * len(CONVENTIONS) * (2 if rerun_packing else 1)):  # packing: each convention, the row and
            model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False)  # a changed copy
        for _ in range(2 if rerun_packing else 0):  # the control (run when a leak shows): the row twice, twice
            model(**twice, use_cache=False)
    probe = session.probe_batch()
    for _ in range(2):  # cce: reference and fused loss on the probe sample, forward and backward
        model(**probe, use_cache=False).loss.backward()
    shortest = sorted(session.examples, key=len)[:4]
    probe = batch_tensors(shortest[:1], dev, session.pad_id)
    for _ in range(2):  # attention: the backend and eager, forward and backward
        model(**probe, use_cache=False).loss.backward()
    four = batch_tensors(shortest, dev, session.pad_id)
    model(**four, use_cache=False).loss.backward()  # grad_accum: one batch of 4 ...
    for half in (shortest[:2], shortest[2:]):  # ... and 2 micro-batches of 2
        model(**batch_tensors(half, dev, session.pad_id), use_cache=False).loss.backward()
    flat = [t for ex in shortest for t in ex.input_ids]  # train_step: the 4 samples as one packed row
    positions = [p for ex in shortest for p in range(len(ex))]
    ids = torch.tensor([flat], device=dev)
    model(input_ids=ids, position_ids=torch.tensor([positions], device=dev), labels=ids,
          use_cache=False).loss.backward()
    kern = sorted((ex for ex in session.examples if ex.n_trained), key=len)[:4]  # kernels: the 4 shortest packed,
    kern_ids = torch.tensor([[t for ex in kern for t in ex.input_ids]], device=dev)  # plain and with the lever
    kern_pos = torch.tensor([[p for ex in kern for p in range(len(ex))]], device=dev)
    for _ in range(2):
        model(input_ids=kern_ids, position_ids=kern_pos, labels=kern_ids, use_cache=False).loss.backward()
    if dev.type == "cuda":  # cce: the memory probe, a forward and backward at its shape, plain and fused
        from onboard.checks.cce import MEMORY_SHAPE
        from onboard.patches import get_patch, unwrap

        vocab = unwrap(model).get_output_embeddings().weight.shape[0]
        ids = torch.randint(0, vocab, MEMORY_SHAPE, device=dev)
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        with get_patch("cce.fused_loss").apply(model):
            model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        torch.cuda.synchronize(dev)
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def _before_load() -> None:
    """What both processes do before the load is timed, so their loads time the same thing: the libraries
    the checks need imported, and the CUDA context up. (Without it an H200 showed 11-12 s of load in the
    checklist's process against 0.35 s in the bare one, which had imported peft before its timer.)"""
    import peft  # noqa: F401
    import transformers.trainer  # noqa: F401

    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")


def bare_main(model: str | None, rerun: bool) -> None:
    """In a fresh process, as cold as the checklist's: load, LoRA, then the bare passes."""
    from peft import get_peft_model


    _before_load()
    t0 = time.perf_counter()
    session = ModelSession(model=model)
    load = time.perf_counter() - t0
    session.set_adapter(get_peft_model(session.model, session.lora_config()))
    print(f"BARE {load} {bare_passes(session, rerun)}")


def main(model: str | None = None) -> None:
    import subprocess

    # one throwaway load first: the first process on a fresh machine also pays for reading the CUDA
    # libraries from disk and building caches (12 s against 0.4 s seen on an H200), which is not the checklist's cost
    subprocess.run([sys.executable, __file__, "--warm", model or ""], capture_output=True, check=True)
    _before_load()
    t0 = time.perf_counter()
    session = ModelSession(model=model)
    load = time.perf_counter() - t0
    report = run_checks(session, CHECKS)
    checks = sum(c.duration_s for c in report.checks)
    rerun = any(c.fix is not None for c in report.checks if c.code == "PACK001")
    out = subprocess.run([sys.executable, __file__, "--bare", model or "", str(int(rerun))],
                         capture_output=True, text=True, check=True).stdout
    bare_load, bare = map(float, next(ln for ln in out.splitlines() if ln.startswith("BARE ")).split()[1:])
    where = torch.cuda.get_device_name(session.device) if session.device.type == "cuda" else \
        f"{torch.get_num_threads()} CPU threads"
    print(f"model {session.spec.display} ({session.dtype}) on {session.device}, {where}, torch {torch.__version__}")
    print(f"load (incl. tokenizing)  {load:7.2f} s")
    for c in report.checks:
        print(f"  {c.code} {c.name:<13} {c.duration_s:7.2f} s  {c.status.value}")
    print(f"checks total             {checks:7.2f} s")
    print(f"bare passes              {bare:7.2f} s  (own process: load {bare_load:.2f} s)")
    target = 1.3 if session.device.type == "cuda" else 1.5
    ratio = (load + checks) / (bare_load + bare)
    print(f"ratio (load + checks) / (load + bare passes) = {ratio:.2f}  (target <= {target})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--warm"]:
        ModelSession(model=sys.argv[2] or None)
    elif sys.argv[1:2] == ["--bare"]:
        bare_main(sys.argv[2] or None, sys.argv[3] == "1")
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else None)
