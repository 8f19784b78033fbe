"""CCE on GPU: peak memory of one LoRA forward+backward with and without the fused loss, against onboard's
predicted saving, and the loss of both on the same batch. CUDA only.

Models are shipped configs built with random weights on the GPU (config:NAME); the patch is applied to the
class that was loaded, so config:gemma3-4b measures a ForConditionalGeneration model.
Run: python bench/cce_memory.py [config:llama3-8b config:gemma3-4b ...]  (JSON lines on stdout too)
Target: measured saving >= 0.9 of the prediction; loss equal within the bf16 tolerance of CCE001.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from onboard.checks.cce import predicted_saving
from onboard.harness.memory import cuda_peak_bytes
from onboard.harness.session import ModelSession
from onboard.patches import get_patch, unwrap

SHAPES = [(4, 2048, False), (4, 2048, True), (2, 8192, True)]  # batch, sequence, gradient checkpointing
GIB = 2**30


def measure(model, batch: dict, patch, checkpointing: bool, device) -> dict:
    base = unwrap(model)
    if checkpointing:
        base.gradient_checkpointing_enable({"use_reentrant": False})
        model.enable_input_require_grads()
    else:
        base.gradient_checkpointing_disable()
    base.train()  # checkpointing acts in train mode only; these configs have no dropout
    losses = {}

    def step(key):
        def run():
            loss = model(**batch, use_cache=False).loss
            loss.backward()
            losses[key] = loss.item()
            model.zero_grad(set_to_none=True)
        return run

    out = {}
    try:
        out["plain"] = cuda_peak_bytes(step("plain"), device)
        with patch.apply(model):
            out["fused"] = cuda_peak_bytes(step("fused"), device)
    except torch.OutOfMemoryError:
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return {"error": "out of memory", **{k: round(v / GIB, 3) for k, v in out.items()}}
    finally:
        base.eval()
    return {"peak_plain_gib": round(out["plain"] / GIB, 3), "peak_fused_gib": round(out["fused"] / GIB, 3),
            "loss_plain": losses["plain"], "loss_fused": losses["fused"]}


def main(models: list[str]) -> None:
    from peft import get_peft_model

    card = torch.cuda.get_device_name(0)
    print(f"# {card}, torch {torch.__version__}", flush=True)
    for name in models:
        start = time.perf_counter()
        session = ModelSession(model=name, device="cuda")
        built = time.perf_counter() - start
        model = get_peft_model(session.model, session.lora_config())
        vocab = unwrap(model).get_output_embeddings().weight.shape[0]
        patch = get_patch("cce.fused_loss")
        for bsz, seq, ckpt in SHAPES:
            gen = torch.Generator().manual_seed(0)
            ids = torch.randint(0, vocab, (bsz, seq), generator=gen).to(session.device)
            row = {"card": card, "model": name, "class": type(unwrap(model)).__name__, "build_s": round(built, 1),
                   "batch": bsz, "seq": seq, "gradient_checkpointing": ckpt, "vocab": vocab,
                   **measure(model, {"input_ids": ids, "labels": ids}, patch, ckpt, session.device)}
            if "error" not in row:
                predicted = predicted_saving(bsz, seq, vocab, session.dtype)
                saved = (row["peak_plain_gib"] - row["peak_fused_gib"]) * GIB
                rel = abs(row["loss_fused"] - row["loss_plain"]) / abs(row["loss_plain"])
                row.update(saving_predicted_gib=round(predicted / GIB, 3), saving_ratio=round(saved / predicted, 3),
                           loss_rel_diff=float(f"{rel:.3g}"), loss_rtol=session.threshold("cce.loss_rtol"))
            print(json.dumps(row), flush=True)
        del model, session
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:] or ["config:llama3-8b", "config:gemma3-4b"])
