"""Fine-tune with TRL's SFTTrainer on a model onboard checked, with the fixes the check verified.

    python examples/trl_sft.py                                  # tiny:llama on the CPU, 2 steps (about a minute)
    python examples/trl_sft.py --model smollm2                  # the embedded SmolLM2-135M (minutes on a CPU)
    python examples/trl_sft.py --model org/name --data chats.jsonl --device cuda

Four things make TRL train what onboard checked:
- the same setup on both sides: gradient checkpointing is on by default in TRL's SFTConfig and off in a CPU check,
  so it is chosen once here and given to both (onboard.apply_patches refuses a trainer whose setup differs);
- LoRA from onboard.lora_config(report, model): the rank, alpha and target modules the checks built;
- packing as the verdict allows: TRL's padding_free packs each batch into one row (the rows are onboard's
  tokenized samples, already cut to the checked max_length, so TRL's own max_length stays None: padding_free
  refuses one it would not enforce); a report whose packing fix is the unpacked fallback trains on
  onboard.collator's right-padded batches instead, with padding_free off;
- the verified model patches applied around trainer.train() by onboard.apply_patches.
"""

from __future__ import annotations

import argparse
import math

import torch


def main(argv: list[str] | None = None):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    import onboard
    from onboard.harness.session import ModelSession
    from onboard.harness.training import checkpointing_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny:llama", help="what `onboard check` takes (default tiny:llama)")
    parser.add_argument("--data", default=None, help='JSONL of {"messages": [...]}; default: onboard\'s built-in chats')
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", default="runs/trl-sft", help="where the LoRA adapter is saved")
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    checkpointing = gpu  # trades compute for memory on the GPU; the check and the trainer must agree

    # 1. the checklist, on the setup this run trains with
    report = onboard.check(args.model, device=args.device, data=args.data, gradient_checkpointing=checkpointing)
    print(f"onboard: {report.verdict.value}; verified patches: {', '.join(report.verified_patches) or 'none'}")
    if report.verdict.value == "NOT_READY":
        raise SystemExit(f"not ready to fine-tune: {report.reason}")

    # 2. the model and the data (load your own model as you always do; this loads what onboard checked)
    session = ModelSession(model=args.model, device=args.device, data=args.data)
    rows = Dataset.from_list([{"input_ids": ex.input_ids, "labels": ex.labels} for ex in session.examples])

    # 3. TRL, set up as the check ran
    packed = "packing.unpacked" not in report.verified_patches
    config = SFTConfig(
        args.out, max_steps=args.steps, per_device_train_batch_size=8, learning_rate=2e-4, logging_steps=1,
        report_to="none", save_strategy="no", use_cpu=not gpu, seed=0, data_seed=0, disable_tqdm=True,
        bf16=gpu,  # mixed precision on the GPU only, as onboard's own step (TRL's default is bf16 everywhere)
        padding_free=packed, max_length=None,
        # activation_checkpointing on transformers 5.24+ (gradient_checkpointing before): no deprecation warning
        **checkpointing_arguments(checkpointing),
    )
    trainer = SFTTrainer(model=session.model, args=config, train_dataset=rows, processing_class=session.tokenizer,
                         peft_config=onboard.lora_config(report, session.model),
                         data_collator=None if packed else onboard.collator(report, session.tokenizer))

    # 4. train with the verified patches (reverted on exit); save the adapter
    with onboard.apply_patches(trainer, report) as applied:
        print(f"applied: {', '.join(applied.applied) or 'none'}; left out: {', '.join(applied.skipped) or 'none'}")
        trainer.train()
    trainer.save_model(args.out)
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    if not losses or not all(math.isfinite(loss) for loss in losses):
        raise SystemExit(f"training did not give finite losses: {losses}")
    print(f"trained {trainer.state.global_step} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}; adapter in {args.out}")
    return trainer


if __name__ == "__main__":
    main()
