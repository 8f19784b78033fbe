"""`onboard train`: LoRA SFT through the HF Trainer and PEFT, with exactly the patches a check run verified.

The model comes from a ModelSession (loaded once; the check run, if any, used the same one). Training
starts from a clean model: whatever the checks left applied is reverted and LoRA is applied afresh with
the LoraConfig the verified LoRA patches write, then the other verified patches are applied through the
same patch objects the checks used. Samples are packed by DataCollatorWithFlattening (one row per
micro-batch, position_ids restarting per sample) unless packing is off.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch

from onboard.harness.data import IGNORE, read_chats
from onboard.harness.errors import BadInput, EnvironmentProblem
from onboard.harness.training import checkpointing_on, prepare_for_checkpointing, training_arguments
from onboard.train.monitor import GracefulStop, StepMeter, peak_memory_gib
from onboard.patches import ids, training_collator
from onboard.train.options import TrainOptions
from onboard.train.policy import changed_checks, left_out_by_training

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession

LOG = "train_log.jsonl"
CONFIG = "train_config.json"
REPORT = "train_report.json"
CURVE = "loss.png"
ADAPTER = "adapter"
# options a resumed run must share with the run it continues
RESUME_KEYS = ("model", "data_sha256", "patches", "lora_r", "lora_alpha", "lora_targets", "lr", "batch_size",
               "batch_tokens", "grad_accum", "packing", "seed", "max_length", "cce", "epochs", "max_steps")


@dataclass
class TrainResult:
    status: str  # completed | interrupted
    out: Path
    steps: int
    records: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_model(session: ModelSession, patch_ids: list[str], options: TrainOptions,
                  patch_options: Mapping[str, str] | None = None) -> tuple[object, list[str], dict[str, str]]:
    """A fresh PEFT model on the session's base model, with the patches applied. Returns the PEFT model,
    the ids applied, and the ids left out with the reason."""
    from peft import get_peft_model

    from onboard.patches import get_patch, is_lora_transform

    try:
        patches = [get_patch(p) for p in patch_ids]
    except KeyError as exc:
        raise BadInput(f"{exc.args[0]} (the report was written by another onboard version?)") from None
    session.release_slice()  # training is the whole model's; the checks' slice is freed
    session.revert_patches()  # what the checks applied, on the checks' PEFT model
    session.set_adapter(None)
    for transform in [p for p in patches if is_lora_transform(p)]:  # LoRA as the checks verified it
        session.apply_patch(transform)
    peft_model = get_peft_model(session.model, session.lora_config())  # the setup's rank, alpha, targets
    session.set_adapter(peft_model)
    left_out = left_out_by_training(patch_ids, session.device.type, options.cce)
    skipped: dict[str, str] = {}
    for patch in [p for p in patches if not is_lora_transform(p)]:
        if patch.id in left_out:
            skipped[patch.id] = left_out[patch.id]
            continue
        session.apply_patch(patch, option=(patch_options or {}).get(patch.id))
    if options.cce == "on" and ids.CCE_FUSED_LOSS not in session.applied:
        raise BadInput("--cce on, but the check run did not verify cce.fused_loss for this model")
    return peft_model, list(session.applied), skipped


def train(session: ModelSession, patch_ids: list[str], options: TrainOptions, *, check_source: dict | None = None,
          console=None, callbacks=(), patch_options: dict[str, str] | None = None,
          examples: list | None = None, check_report=None, free_memory=None) -> TrainResult:
    """Train a LoRA on the session's model; write the adapter, a JSON step log, the loss curve and a report.
    `examples`: the data file already tokenized by the caller (onboard train measures its rows before the checks).
    `check_report`: the check run's RunReport, which the training plan reads (KERN001's checkpointing null, GA001).
    `free_memory`: what reads the device's free bytes for the plan (default: torch.cuda.mem_get_info on CUDA, none on
    the CPU; tests give a reading of their own)."""
    from transformers import PrinterCallback, Trainer
    from transformers.trainer_utils import get_last_checkpoint

    import os

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    lead = rank == 0  # one run folder, one report, one adapter: rank 0's
    out = Path(options.out)
    data_path = Path(options.data) if options.data else session.data_path
    if examples is not None:
        pass  # the caller read and tokenized this file
    elif data_path == session.data_path and len(session.examples) == session.n_chats:
        examples = session.examples  # the session already read and tokenized the whole file
    else:
        examples = session.tokenize(read_chats(data_path))  # every line validated: a bad one is named
    rows = [{"input_ids": ex.input_ids, "labels": ex.labels} for ex in examples]
    untrained = sum(1 for ex in examples if ex.n_trained == 0)
    truncated = sum(1 for ex in examples if ex.truncated)

    fingerprint = {
        "model": session.spec.display, "data_sha256": file_sha256(data_path), "patches": sorted(patch_ids),
        "patch_options": dict(sorted((patch_options or {}).items())),
        "lora_targets": session.lora_targets or "all-linear", "max_length": session.max_length,
        "lora_r": session.lora_rank, "lora_alpha": session.lora_alpha,
        **{k: v for k, v in asdict(options).items() if k not in ("out", "data", "resume", "save_steps")},
    }
    checkpoint = _resume_point(out, fingerprint, options.resume, get_last_checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    if lead:
        (out / CONFIG).write_text(json.dumps(fingerprint, indent=2, default=str))

    from transformers import set_seed

    set_seed(options.seed)  # the LoRA initialisation too, so equal options give equal runs
    model, applied, skipped = prepare_model(session, patch_ids, options, patch_options)
    if console is not None:
        console.print(f"Training with patches: {', '.join(applied) or 'none'}"
                      + "".join(f"; {k} left out: {why}" for k, why in skipped.items()), highlight=False)
        levers = [p for p in applied if p.startswith("speed.")]
        if levers:
            console.print(f"Speed levers: {', '.join(levers)} (KERN001 verified the same loss and adapter gradients "
                          "with them on)", highlight=False)
        if ids.MOE_EXPERTS_IMPLEMENTATION in applied:
            console.print(f"Experts implementation: {session.patch_options[ids.MOE_EXPERTS_IMPLEMENTATION]} (MOE001 "
                          "verified eager's loss and adapter gradients with it, and found it fastest)", highlight=False)
    if session.tokenizer.pad_token_id is None:
        session.tokenizer.pad_token_id = session.pad_id
    packing = options.packing and ids.PACKING_UNPACKED not in applied  # the check's fallback: packed rows leak
    if packing:  # PACK001 judged a sample at the far end of rows up to session.longest_row tokens, no longer
        built = longest_row_built([len(r["input_ids"]) for r in rows], options.batch_size, options.batch_tokens)
        if built > session.longest_row:
            raise BadInput(f"this run packs rows of up to {built} tokens; the checks judged rows of up to "
                           f"{session.longest_row}: run onboard check with --row-tokens {built} (or --data with this "
                           "run's data) first, or pack shorter rows (--batch-size, --batch-tokens)")
    if options.packing and not packing and console is not None:
        console.print("Packing off: the checks found that packed samples do not train as they do alone on this model "
                      "and verified right-padded micro-batches instead (packing.unpacked)", highlight=False)
    # --no-packing pads as the fallback does: on the right, whatever side the tokenizer pads on
    collator = training_collator(applied if packing else [*applied, ids.PACKING_UNPACKED], session.pad_id, IGNORE,
                                 position_start=session.position_start if packing else 0)
    cuda = session.device.type == "cuda"
    plan = _plan(session, model, rows, options, packing, out, checkpoint, check_report, free_memory, world, lead)
    if console is not None:
        console.print(plan.line(), highlight=False)
    asked = session.setup  # the session's own setup again once the arguments are built: a next run plans afresh
    if plan.planned:
        session.setup = session.setup.replace(gradient_checkpointing=plan.checkpointing,
                                              checkpoint_every=plan.checkpoint_every)
    # the builder TRAIN001 and GA001 used: precision and checkpointing are what the checks ran with, or the plan's
    collator_name = type(collator).__name__
    args = training_arguments(
        session, out,
        per_device_train_batch_size=options.batch_size // plan.split if options.batch_tokens is None else 1,
        gradient_accumulation_steps=options.grad_accum * plan.split,
        learning_rate=options.lr, num_train_epochs=options.epochs, max_steps=options.max_steps,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, seed=options.seed, data_seed=options.seed,
        logging_steps=1, save_strategy="steps", save_steps=options.save_steps, save_total_limit=2,
        **_sharding(model, world, cuda),
    )
    session.setup = asked
    prepare_for_checkpointing(model, args)
    dataset = rows
    if options.batch_tokens is not None:  # one dataset item per micro-batch: the samples a token budget holds
        dataset = [{"samples": [rows[i] for i in group]}
                   for group in token_budget_groups([len(r["input_ids"]) for r in rows], options.batch_tokens,
                                                    padded=not packing)]
        flatten = collator
        collator = lambda items: flatten([sample for item in items for sample in item["samples"]])  # noqa: E731
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.remove_callback(PrinterCallback)
    start_step = int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0
    listeners = []
    progress = None
    if console is not None:
        from onboard.train.monitor import RichProgress

        progress = RichProgress(console, _total_steps(len(dataset), options), start_step)
        listeners.append(progress)
    meter = StepMeter(trainer, out / (LOG if lead else f"rank{rank}_{LOG}"), session.device, keep_until=start_step,
                      listeners=tuple(listeners))
    stop = GracefulStop()
    for cb in (meter, stop, *callbacks):
        trainer.add_callback(cb)
    if cuda:
        torch.cuda.reset_peak_memory_stats(session.device)
    started = time.perf_counter()
    try:
        with stop.installed():
            if progress is not None:
                with progress:
                    trainer.train(resume_from_checkpoint=checkpoint)
            else:
                trainer.train(resume_from_checkpoint=checkpoint)
    except torch.OutOfMemoryError as exc:
        raise EnvironmentProblem(
            f"out of GPU memory at step {trainer.state.global_step}: lower --batch-size or --max-length, "
            "or raise --grad-accum") from exc
    seconds = time.perf_counter() - started
    status = "interrupted" if stop.stopped_at is not None else "completed"
    if status == "completed":
        if world > 1:
            trainer.save_model(str(out / ADAPTER))  # the full adapter gathered from the shards, written by rank 0
        elif lead:
            model.save_pretrained(out / ADAPTER)
        if lead:
            session.tokenizer.save_pretrained(out / ADAPTER)
            _name_the_base(session, out / ADAPTER)
    records = meter.records
    report = {
        "status": status,
        "model": session.describe(),
        "check": check_source or {},
        "patches_applied": applied,
        "patches_skipped": skipped,
        "setup": _setup_record(session.setup),
        "lora": {"r": session.lora_rank, "alpha": session.lora_alpha,
                 "targets": sorted(model.peft_config["default"].target_modules or []),
                 "target_parameters": sorted(model.peft_config["default"].target_parameters or []),
                 "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)},
        "data": {"path": str(data_path), "sha256": fingerprint["data_sha256"], "samples": len(examples),
                 "tokens": sum(len(ex) for ex in examples), "trained_tokens": sum(ex.n_trained for ex in examples),
                 "truncated_samples": truncated, "samples_without_trained_tokens": untrained},
        "options": {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
                    "gradient_checkpointing": checkpointing_on(args), "bf16": args.bf16,
                    "packed": packing, "collator": collator_name},
        "plan": plan.record(),
        "processes": {"world_size": world,
                      "engine": "one process" if world < 2 else ("FSDP2 through accelerate" if cuda else
                                                                  "DDP through accelerate (no FSDP on the CPU)"),
                      "tokens_counted": "all processes' (summed each step)"},
        "resumed_from": checkpoint,
        "steps": trainer.state.global_step,
        "first_loss": records[0]["loss"] if records else None,
        "final_loss": records[-1]["loss"] if records else None,
        "tokens_per_s": _tokens_per_s(records),
        "peak_memory_gib": round(peak_memory_gib(session.device), 3),
        "train_seconds": round(seconds, 2),
        "adapter": str(out / ADAPTER) if status == "completed" else None,
        "last_checkpoint": get_last_checkpoint(str(out)),
        "environment": _environment(session.device),
    }
    if records and lead:
        from onboard.train.plot import PLOT_INSTALL, loss_curve

        try:
            loss_curve(records, out / CURVE, title=f"{session.spec.display} LoRA r={session.lora_rank}")
            report["loss_curve"] = str(out / CURVE)
        except ImportError:  # matplotlib is the [plot] extra: the log has every step, the picture is optional
            report["loss_curve"] = None
            report["loss_curve_missing"] = f"matplotlib is not installed: {PLOT_INSTALL} draws {CURVE}"
    if lead:
        (out / REPORT).write_text(json.dumps(report, indent=2, default=str))
    return TrainResult(status=status, out=out, steps=trainer.state.global_step, records=records, report=report)


PLAN = "plan.json"


def _sharding(model, world: int, cuda: bool) -> dict:
    """TrainingArguments for several processes: FSDP2 through accelerate on CUDA, wrapped by the decoder-layer class
    found in the module tree (FSDP001's check of the same); nothing on the CPU, where accelerate runs DDP."""
    if world < 2 or not cuda:
        return {}
    from onboard.patches.speed import repeated_blocks

    blocks = repeated_blocks(model)
    config = {"version": 2}
    if blocks:
        config["transformer_layer_cls_to_wrap"] = [type(blocks[0]).__name__]
    return {"fsdp": True, "fsdp_config": config}


def _plan(session: ModelSession, model, rows: list[dict], options: TrainOptions, packing: bool, out: Path,
          checkpoint: str | None, check_report, free_memory=None, world: int = 1, lead: bool = True):
    """The training plan (onboard.train.plan): measured for a new run, the saved one for a resumed run (its
    micro-batches must be the ones its checkpoint counted)."""
    from onboard.train.plan import Plan, plan_training

    if world > 1:  # each process holds a shard (FSDP2) or a replica (DDP): the probe measures one process alone
        plan = Plan(False, f"{world} processes, and the plan measures one process alone",
                    checkpointing=session.setup.gradient_checkpointing)
    elif checkpoint and (out / PLAN).exists():
        saved = json.loads((out / PLAN).read_text())
        plan = Plan(**{k: v for k, v in saved.items() if k in Plan.__dataclass_fields__})
        plan.why = f"the plan of the run resumed ({plan.why})"
    else:
        lengths = [len(r["input_ids"]) for r in rows]
        if options.batch_tokens is not None:  # a token budget: the fullest micro-batch, not split (the budget's)
            group = max(token_budget_groups(lengths, options.batch_tokens, padded=not packing),
                        key=lambda g: sum(lengths[i] for i in g))
            worst, samples, may_split = [lengths[i] for i in group], len(group), False
        else:
            worst, samples, may_split = lengths, options.batch_size, True
        if not packing:  # right-padded: every sample as long as the longest of its micro-batch
            top = sorted(worst, reverse=True)[:samples]
            worst = [max(top)] * len(top) if top else worst
        plan = plan_training(session, model, worst, samples, report=check_report, may_split=may_split,
                             free_memory=free_memory)
    if lead:
        (out / PLAN).write_text(json.dumps(plan.record(), indent=2))
    return plan


def _setup_record(setup) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(setup).items()}


def _name_the_base(session: ModelSession, folder: Path) -> None:
    """PEFT records the folder the base model was loaded from; for an embedded or GGUF model that is a cache
    folder whose name says nothing. onboard_base.json names the model as the user gave it."""
    described = {"model": session.spec.display, "source": session.spec.kind.value,
                 "base_model_name_or_path": model_path(session)}
    if session.spec.kind.value == "embedded":
        from onboard.harness.sources import embedded_models

        described["description"] = embedded_models()[session.spec.target].description
    (folder / "onboard_base.json").write_text(json.dumps(described, indent=2))


def model_path(session: ModelSession) -> str | None:
    return getattr(session.model.config, "_name_or_path", None) or None


def longest_row_built(lengths: list[int], batch_size: int, batch_tokens: int | None) -> int:
    """The longest packed row a run makes: a token budget's, or its micro-batch of `batch_size` samples at the
    longest (the longest samples together)."""
    if batch_tokens is not None:
        return min(batch_tokens, sum(lengths)) if lengths else 0
    return sum(sorted(lengths, reverse=True)[:batch_size])


def refuse_existing_run(out: Path, resume: bool) -> None:
    """An --out holding an earlier run's checkpoints is refused before anything slow runs (unless --resume)."""
    from transformers.trainer_utils import get_last_checkpoint

    if not resume and Path(out).is_dir() and get_last_checkpoint(str(out)):
        raise BadInput(f"{out} holds checkpoints of an earlier run: pass --resume to continue it, "
                       "or choose another --out")


def _resume_point(out: Path, fingerprint: dict, resume: bool, get_last_checkpoint) -> str | None:
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if not resume:
        if last:
            raise BadInput(f"{out} holds checkpoints of an earlier run: pass --resume to continue it, "
                           "or choose another --out")
        return None
    if last is None:
        return None  # nothing saved yet: start from step 0
    saved = json.loads((out / CONFIG).read_text()) if (out / CONFIG).exists() else {}
    changed = [k for k in RESUME_KEYS if saved.get(k) != json.loads(json.dumps(fingerprint.get(k), default=str))]
    if changed:
        raise BadInput(f"cannot resume {out}: {', '.join(changed)} differ from the run that wrote it")
    return last


def token_budget_groups(lengths: list[int], budget: int, padded: bool = False) -> list[list[int]]:
    """Indices grouped in order while their tokens fit `budget`: the sum of their lengths in a packed row, or
    (`padded`) the longest length times the count in a right-padded batch. A sample longer than the budget is a
    group of its own (it is never cut)."""
    groups: list[list[int]] = []
    total = longest = 0
    for i, n in enumerate(lengths):
        grown = max(longest, n) * (len(groups[-1]) + 1) if padded and groups else total + n
        if groups and grown <= budget:
            groups[-1].append(i)
            total, longest = total + n, max(longest, n)
        else:
            groups.append([i])
            total = longest = n
    return groups


def _total_steps(n_rows: int, options: TrainOptions) -> int:
    if options.max_steps > 0:
        return options.max_steps
    import math

    per_batch = options.batch_size if options.batch_tokens is None else 1  # n_rows: micro-batches already
    per_epoch = math.ceil(math.ceil(n_rows / per_batch) / options.grad_accum)
    return max(1, math.ceil(per_epoch * options.epochs))


def _tokens_per_s(records: list[dict]) -> float | None:
    """Real tokens per second over the run, the first step (warm-up, compilation) left out when there are more."""
    steady = records[1:] if len(records) > 1 else records
    seconds = sum(r["step_seconds"] for r in steady)
    return round(sum(r["tokens"] for r in steady) / seconds, 1) if seconds > 0 else None


def _environment(device) -> dict:
    from onboard.harness.runner import environment

    return environment(device)


def load_check_report(path: Path):
    """A saved `onboard check --json` report."""
    from onboard.harness.result import RunReport

    try:
        data = json.loads(Path(path).read_text())
        report = RunReport.from_dict(data)
    except FileNotFoundError:
        raise BadInput(f"no such report: {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{path} is not an onboard check report: {exc}") from None
    changed = changed_checks(report)
    if changed:
        raise BadInput(f"{path} was made by checks that have changed since ({'; '.join(changed)}): its verdict is "
                       "not this onboard's; run onboard check again")
    return report
