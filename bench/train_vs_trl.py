"""onboard train against TRL's SFTTrainer, side by side on one GPU: tokens/s, peak memory, MFU.

Same model shape (a shipped config, random weights built on the GPU), same chats, same LoRA (r 16,
alpha 32, all-linear), same samples per step, same number of steps, bf16. Four runs, each in its own
process so peak memory is its own:
  onboard      onboard train: packed rows (DataCollatorWithFlattening), the verified patches
               (packing.no_cache_no_mask, cce.fused_loss), gradient checkpointing
  onboard_nogc the same without gradient checkpointing (the fused loss leaves room for the activations)
  trl          SFTTrainer with SFTConfig defaults (padding to the longest sample of the batch)
  trl_pf       SFTTrainer with padding_free=True
  onboard_fast, onboard_fast_nogc: onboard with the speed levers KERN001 verifies (speed.packed_attention)
  trl_pf_liger SFTTrainer with padding_free=True and use_liger_kernel=True (TRL's own fast path)
Tokens are real tokens (padding excluded), counted the same way for all three (onboard's StepMeter
wraps each trainer's training_step); the first WARMUP steps are left out. MFU = 4 * N * tokens/s / peak,
N the parameters doing matmuls (all but the input embedding): a LoRA step runs the frozen weights
forward (2N) and backward for activations (2N), with no weight gradients; recomputation is not counted.
Run: python bench/train_vs_trl.py [--model config:llama3-8b] [--steps 20] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

WARMUP = 3
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16
WORDS = ("the model learns from packed rows while padding wastes memory and time on tokens nobody reads "
         "attention stays inside each sample because positions restart loss falls when the data repeats "
         "engineers check the architecture before they train it on chats of every length").split()


def make_chats(path: Path, n: int, seed: int = 0) -> None:
    """Chats of log-uniform lengths (about 50 to 1100 words, under --max-length tokens, so no run truncates and
    all three train on the same tokens; TRL's padding-free mode does not truncate): the spread that makes
    padding costly."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            def text(lo, hi):
                return " ".join(rng.choice(WORDS) for _ in range(int(round(2 ** rng.uniform(lo, hi)))))
            chat = [{"role": "user", "content": text(4, 7)}, {"role": "assistant", "content": text(5, 10)}]
            f.write(json.dumps({"messages": chat}) + "\n")


def matmul_params(model) -> int:
    from onboard.patches import unwrap

    base = unwrap(model)
    embed = base.get_input_embeddings().weight
    return sum(p.numel() for p in base.parameters() if p is not embed)


def summary(records: list[dict], n_params: int, seconds: float, device: torch.device) -> dict:
    from onboard.train.monitor import peak_memory_gib

    steady = records[WARMUP:] or records
    secs = sum(r["step_seconds"] for r in steady)
    tps = sum(r["tokens"] for r in steady) / secs
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in card), None)
    return {"card": card, "steps": len(records), "tokens_per_s": round(tps, 1),
            "tokens_per_step": round(sum(r["tokens"] for r in steady) / len(steady), 1),
            "peak_memory_gib": round(peak_memory_gib(device), 2),
            "mfu": round(4 * n_params * tps / (peak * 1e12), 4) if peak else None,
            "matmul_params": n_params, "wall_s": round(seconds, 1),
            "losses": [round(r["loss"], 4) for r in records]}


def run_onboard(args, data: Path, out: Path, checkpointing: bool | None = True, fast: bool = False) -> dict:
    from onboard.harness.session import ModelSession
    from onboard.train import TrainOptions, train

    session = ModelSession(model=args.model, device=args.device, data=data, max_length=args.max_length,
                           max_examples=4, gradient_checkpointing=checkpointing,
                           row_tokens=args.batch * args.max_length)
    opts = TrainOptions(out=out, max_steps=args.steps, batch_size=args.batch, lr=1e-4, save_steps=10**6)
    start = time.perf_counter()
    patches = ["packing.no_cache_no_mask"] + (["cce.fused_loss"] if session.device.type == "cuda" else [])
    # the levers KERN001 verifies on this shape (tests/test_gpu.py)
    patches += ["speed.packed_attention", "speed.compiled_layers"] if fast else []
    try:
        result = train(session, patches, opts)
    except Exception as exc:  # the plan it made is the evidence of an out-of-memory error
        plan = json.loads((out / "plan.json").read_text()) if (out / "plan.json").exists() else {}
        raise RuntimeError(f"{type(exc).__name__}: {exc}; plan {json.dumps(plan)[:3000]}") from exc
    plan = result.report.get("plan") or {}
    chosen = next((c for c in plan.get("candidates", []) if c.get("chosen")), None)
    return summary(result.records, matmul_params(session.peft_model), time.perf_counter() - start,
                   session.device) | {
        "patches": result.report["patches_applied"], "fast": fast,
        "gradient_checkpointing": result.report["options"]["gradient_checkpointing"],
        "plan": {k: plan.get(k) for k in ("planned", "why", "checkpointing", "checkpoint_every", "split")},
        "plan_need_gib": round(chosen["need_bytes"] / 2**30, 2) if chosen else None,
        "free_gib_at_plan": round(plan["free_bytes"] / 2**30, 2) if plan.get("free_bytes") else None}


def run_onboard_checked(args, data: Path, out: Path) -> dict:
    """The product's path: the checks (COMPILE001 aside: --no-torch-compile) on the session training uses, then
    onboard train with the patches they verified and the plan they allow (checkpointing chosen by measuring)."""
    from onboard.checks import CHECKS
    from onboard.harness.runner import run_checks
    from onboard.harness.session import ModelSession
    from onboard.train import TrainOptions, train

    start = time.perf_counter()
    session = ModelSession(model=args.model, device=args.device, data=data, max_length=args.max_length,
                           max_examples=32, torch_compile=False, row_tokens=args.batch * args.max_length)
    report = run_checks(session, CHECKS)
    checked = time.perf_counter() - start
    opts = TrainOptions(out=out, max_steps=args.steps, batch_size=args.batch, lr=1e-4, save_steps=10**6)
    result = train(session, report.verified_patches, opts, check_report=report, patch_options=report.patch_options)
    plan = result.report.get("plan") or {}
    chosen = next((c for c in plan.get("candidates", []) if c.get("chosen")), None)
    return summary(result.records, matmul_params(session.peft_model), time.perf_counter() - start - checked,
                   session.device) | {
        "verdict": report.verdict.value, "check_seconds": round(checked, 1),
        "findings": {c.code: c.diagnosis for c in report.checks if c.diagnosis},
        "patches": result.report["patches_applied"],
        "gradient_checkpointing": result.report["options"]["gradient_checkpointing"],
        "plan": {k: plan.get(k) for k in ("planned", "why", "checkpointing", "checkpoint_every", "split")},
        "plan_need_gib": round(chosen["need_bytes"] / 2**30, 2) if chosen else None,
        "free_gib_at_plan": round(plan["free_bytes"] / 2**30, 2) if plan.get("free_bytes") else None}


def run_trl(args, data: Path, out: Path, padding_free: bool, liger: bool = False, checkpointing: bool = True) -> dict:
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from onboard.harness.session import ModelSession
    from onboard.train.monitor import StepMeter

    session = ModelSession(model=args.model, device=args.device, max_examples=1)  # builds the model
    dataset = load_dataset("json", data_files=str(data), split="train")
    config = SFTConfig(output_dir=str(out), per_device_train_batch_size=args.batch, max_steps=args.steps,
                       learning_rate=1e-4, logging_steps=1, save_strategy="no", report_to="none",
                       max_length=None if padding_free else args.max_length, padding_free=padding_free, seed=0, disable_tqdm=True,
                       bf16=session.device.type == "cuda", use_cpu=session.device.type != "cuda",
                       use_liger_kernel=liger, gradient_checkpointing=checkpointing)
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")
    trainer = SFTTrainer(model=session.model, args=config, train_dataset=dataset,
                         processing_class=session.tokenizer, peft_config=peft_config)
    meter = StepMeter(trainer, out / "log.jsonl", session.device)
    trainer.add_callback(meter)
    if session.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    return summary(meter.records, matmul_params(trainer.model), time.perf_counter() - start, session.device) | {
        "gradient_checkpointing": config.gradient_checkpointing, "padding_free": padding_free, "liger": liger}


MODES = ("onboard", "onboard_nogc", "onboard_fast", "onboard_fast_nogc", "onboard_plan", "onboard_checked", "trl", "trl_pf",
         "trl_pf_liger", "trl_pf_liger_nogc", "trl_pf_nogc")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="config:llama3-8b")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--mode", choices=MODES)
    parser.add_argument("--modes", default=",".join(MODES), help="the runs, comma-separated, in this order")
    parser.add_argument("--data")
    args = parser.parse_args()
    if args.mode:  # one run, in this process
        out = Path(tempfile.mkdtemp())
        runs = {"onboard": lambda: run_onboard(args, Path(args.data), out),
                "onboard_nogc": lambda: run_onboard(args, Path(args.data), out, checkpointing=False),
                "onboard_fast": lambda: run_onboard(args, Path(args.data), out, fast=True),
                "onboard_fast_nogc": lambda: run_onboard(args, Path(args.data), out, checkpointing=False, fast=True),
                "trl": lambda: run_trl(args, Path(args.data), out, False),
                "trl_pf": lambda: run_trl(args, Path(args.data), out, True),
                "trl_pf_liger": lambda: run_trl(args, Path(args.data), out, True, liger=True),
                # the plan chooses checkpointing from the free memory and the measured activations
                "onboard_plan": lambda: run_onboard(args, Path(args.data), out, checkpointing=None, fast=True),
                "onboard_checked": lambda: run_onboard_checked(args, Path(args.data), out),
                "trl_pf_liger_nogc": lambda: run_trl(args, Path(args.data), out, True, liger=True, checkpointing=False),
                "trl_pf_nogc": lambda: run_trl(args, Path(args.data), out, True, checkpointing=False)}
        try:
            result = runs[args.mode]()
        except Exception as exc:  # noqa: BLE001 - one failing run is reported, the others still run
            result = {"error": f"{type(exc).__name__}: {str(exc)[:3500]}"}
        print("RESULT " + json.dumps({"mode": args.mode, "model": args.model, **result}), flush=True)
        return
    data = Path(tempfile.mkdtemp()) / "chats.jsonl"
    make_chats(data, args.samples)
    results = {}
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--mode", mode, "--data", str(data), "--model", args.model,
               "--steps", str(args.steps), "--batch", str(args.batch), "--max-length", str(args.max_length),
               "--device", args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        results[mode] = json.loads(line[7:]) if line else {"error": (proc.stderr or proc.stdout)[-800:]}
        print(json.dumps(results[mode]), flush=True)
    ours, trl, pf = (results.get(m, {}) for m in ("onboard", "trl", "trl_pf"))
    if all("tokens_per_s" in r for r in (ours, trl, pf)):
        print(f"tokens/s: onboard {ours['tokens_per_s']:.0f}, trl {trl['tokens_per_s']:.0f}, "
              f"trl padding-free {pf['tokens_per_s']:.0f}; onboard/trl {ours['tokens_per_s'] / trl['tokens_per_s']:.2f} "
              f"(target >= 2), onboard/trl_pf {ours['tokens_per_s'] / pf['tokens_per_s']:.2f} (target > 1)")
        print(f"peak GiB: onboard {ours['peak_memory_gib']}, trl {trl['peak_memory_gib']}, trl padding-free "
              f"{pf['peak_memory_gib']}; onboard/trl {ours['peak_memory_gib'] / trl['peak_memory_gib']:.2f} (target <= 0.5)")


if __name__ == "__main__":
    main()
