"""Where one LoRA training step's GPU time goes, with and without speed.packed_attention (torch profiler).

One packed row (the Llama-3-8B shape by default, random weights, bf16, LoRA r 16 all-linear, no gradient
checkpointing) of 12 samples of log-uniform length, about 6.5k tokens: one forward and backward, after
two warm-up steps. Prints per run the step's wall time and the CUDA kernels that take the most time, grouped
by name, and the share of attention kernels.
Run: python bench/step_profile.py [--model config:llama3-8b] [--tokens 6500]
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from torch.profiler import ProfilerActivity, profile

ATTENTION = ("flash", "attention", "fmha", "varlen", "sdpa", "softmax")


def row(tokens: int, samples: int, vocab: int, device) -> dict[str, torch.Tensor]:
    rng = random.Random(0)
    weights = [2 ** rng.uniform(0, 4) for _ in range(samples)]
    lengths = [max(16, int(tokens * w / sum(weights))) for w in weights]
    ids = torch.randint(0, vocab, (1, sum(lengths)), generator=torch.Generator().manual_seed(0))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    return {"input_ids": ids.to(device), "labels": ids.to(device), "position_ids": positions.to(device)}


def step(model, batch) -> None:
    model(**batch, use_cache=False).loss.backward()
    model.zero_grad(set_to_none=True)


def timed(model, batch, autocast: bool = False, warm: int = 2, runs: int = 3) -> tuple[float, float]:
    """(seconds per step, peak GiB) of forward + backward, after `warm` steps."""
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else torch.autocast("cuda", enabled=False)
    with ctx:
        for _ in range(warm):
            step(model, batch)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(runs):
            step(model, batch)
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / runs, torch.cuda.max_memory_allocated() / 2**30


def compile_layers(model, on: bool) -> None:
    """Regional compilation: each decoder layer compiled on its own (one code object, compiled once)."""
    from onboard.patches import unwrap

    for layer in unwrap(model).model.layers:
        if on:
            layer.compile()
        else:
            layer._compiled_call_impl = None


def variants(model, batch) -> None:
    """Levers on top of speed.packed_attention, one at a time: ms per step, tokens/s, peak memory."""
    from onboard.patches import get_patch, ids, unwrap

    tokens = batch["input_ids"].numel()

    def show(label, seconds, peak):
        print(f"  {label:<48} {seconds * 1e3:7.0f} ms  {tokens / seconds:7.0f} tokens/s  {peak:6.1f} GiB", flush=True)

    show("plain (sdpa, block mask)", *timed(model, batch))
    with get_patch(ids.SPEED_PACKED_ATTENTION).apply(model):
        show("packed_attention", *timed(model, batch))
        show("packed_attention + autocast bf16 (as the Trainer)", *timed(model, batch, autocast=True))
        compile_layers(model, True)
        show("packed_attention + compiled layers", *timed(model, batch, warm=3))
        show("packed_attention + compiled layers + autocast", *timed(model, batch, autocast=True, warm=3))
        compile_layers(model, False)
        try:
            from liger_kernel.transformers import _apply_liger_kernel_to_instance

            _apply_liger_kernel_to_instance(model=unwrap(model), rope=True, rms_norm=True, swiglu=True,
                                            cross_entropy=False, fused_linear_cross_entropy=False)
            show("packed_attention + liger (rope, rms_norm, swiglu)", *timed(model, batch))
            compile_layers(model, True)
            show("packed_attention + liger + compiled layers", *timed(model, batch, warm=3))
        except Exception as exc:  # noqa: BLE001
            print(f"  liger: {type(exc).__name__}: {str(exc)[:200]}")


def measure(model, batch, label: str) -> None:
    for _ in range(2):
        step(model, batch)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(3):
        step(model, batch)
    torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / 3
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step(model, batch)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    attention = sum(e.self_device_time_total for e in events if any(a in e.key.lower() for a in ATTENTION))
    tokens = batch["input_ids"].numel()
    print(f"\n== {label}: {wall * 1e3:.0f} ms per step ({tokens / wall:.0f} tokens/s), CUDA kernels {total / 1e3:.0f} ms, "
          f"attention kernels {attention / 1e3:.0f} ms ({attention / total:.0%})")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:10]:
        print(f"  {e.self_device_time_total / 1e3:8.1f} ms  {e.self_device_time_total / total:5.1%}  {e.count:5d}x  {e.key[:90]}")


def main() -> None:
    from peft import get_peft_model

    from onboard.harness.session import ModelSession
    from onboard.patches import get_patch, ids

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="config:llama3-8b")
    parser.add_argument("--tokens", type=int, default=6500)
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--variants", action="store_true", help="time further levers instead of profiling")
    args = parser.parse_args()
    session = ModelSession(model=args.model, device="cuda", max_examples=1)
    model = get_peft_model(session.model, session.lora_config())
    model.config.use_cache = False
    batch = row(args.tokens, args.samples, session.model.config.vocab_size, session.device)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.model}, {batch['input_ids'].numel()} tokens "
          f"in {args.samples} samples")
    if args.variants:
        variants(model, batch)
        return
    measure(model, batch, "plain (sdpa, block-diagonal mask)")
    with get_patch(ids.SPEED_PACKED_ATTENTION).apply(model):
        measure(model, batch, f"speed.packed_attention ({get_patch(ids.SPEED_PACKED_ATTENTION).describe(model)})")


if __name__ == "__main__":
    main()
