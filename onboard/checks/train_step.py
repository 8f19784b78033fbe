"""TRAIN001: one real optimizer step through the HF Trainer, with the packing collator onboard train uses."""

from __future__ import annotations

import tempfile
import time

import torch

from onboard.checks.base import Check, FixAvailability
from onboard.harness.result import Status
from onboard.harness.training import restore_parameters
from onboard.patches.base import unwrap
from onboard.patches import ids

SAMPLES = 4


def packing_collator():
    """What onboard train feeds the model: samples flattened into one row, position_ids restarting per
    sample, no attention mask, the first label of each sample ignored."""
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_position_ids=True)


class TrainStepCheck(Check):
    """What it does:
    Runs one optimizer step of LoRA training with the HF Trainer on a few samples, packed by the collator
    `onboard train` uses (DataCollatorWithFlattening: one row, position_ids restarting per sample, no
    mask), with every patch verified so far applied. It checks that the step runs, that the adapter
    weights change, and that the step's loss equals the loss of the same samples run one by one (relative
    1e-4 in fp32, 2e-2 in bf16/fp16), which ties the packed training path to the reference. A model that is
    stochastic in train mode (two seeds give other logits: dropout, whatever its config calls it) has the
    same packed batch's Trainer loss compared with dropout off instead.

    Why it matters:
    A bare forward does not go through the Trainer, its collator, train mode or the optimizer. Models
    that require extra inputs only in training, losses that break under packing, and adapters that
    never update show up only here.

    Failure modes:
    FM-INPUT-EXTRA (a training forward requires token_type_ids / mm_token_type_ids that text-only data
    lacks), FM-TRAIN-STEP (any other error of a real training step), FM-TRAIN-NOUPDATE (the adapter did
    not change, or the training loss depends on no adapter: a train-mode path that bypasses the wrapped
    modules), FM-TRAIN-LOSS (the packed training loss is not the samples' loss).

    Fix:
    inputs.token_type_ids (safe): inject all-zero type ids that the forward is found to require, by
    calling it; verified by running the step again.
    """

    code = "TRAIN001"
    name = "train_step"
    summary = "one Trainer step with the packing collator runs and updates the adapter"
    requires = ("LORA001",)
    fix_availability = FixAvailability.SOMETIMES
    needs_labels = True

    def run(self, session):
        from transformers import PrinterCallback, Trainer

        from onboard.harness.training import (checkpointing, prepare_for_checkpointing, training_arguments,
                                              undo_checkpointing)

        model = session.train_model
        examples = sorted(session.examples, key=len)[:SAMPLES]
        data = [{"input_ids": ex.input_ids, "labels": ex.labels} for ex in examples]
        trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        res = self.result(Status.PASS, "")
        start = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as out:
                # the arguments `onboard train` builds (precision, gradient checkpointing), one step of them
                args = training_arguments(session, out, per_device_train_batch_size=SAMPLES, max_steps=1,
                                          learning_rate=1e-3, logging_steps=1)
                prepare_for_checkpointing(model, args)
                trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=packing_collator())
                trainer.remove_callback(PrinterCallback)  # the step's log goes to the report, not stdout
                packed = {k: v.to(session.device) for k, v in packing_collator()(data).items()}
                # dropout (nn.Dropout, functional, any name its config gives it) shows as a train-mode forward
                # that differs between two seeds; the loss is then compared with the model in eval mode
                stochastic = _stochastic_in_train_mode(model, packed)
                eval_loss = _eval_loss(trainer, model, packed) if stochastic else None
                losses = _record_losses(trainer)  # exact: the Trainer's log rounds to 4 digits
                trainer.train()
            changed = sum(not torch.equal(p.detach(), trainable[n]) for n, p in model.named_parameters()
                          if n in trainable)
        except Exception as exc:  # noqa: BLE001 - a training step that fails is the finding
            text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            res.status, res.message = Status.FAIL, f"the training step failed: {text}"
            res.evidence["error"] = text
            if _names_missing_input(exc, unwrap(model)):
                res.diagnosis, res.proposed_patch = "FM-INPUT-EXTRA", ids.INPUTS_TOKEN_TYPE_IDS
            elif "does not require grad" in str(exc):  # torch: the training loss depends on no trainable weight
                res.diagnosis = "FM-TRAIN-NOUPDATE"
                res.message = ("the training step's loss depends on no adapter: in train mode the model does not "
                               f"call the modules LoRA wrapped (a fused training path), so nothing updates ({text})")
            else:
                res.diagnosis = "FM-TRAIN-STEP"
            return res
        finally:
            _restore(model, trainable)
            undo_checkpointing(model)
        seconds = time.perf_counter() - start
        tokens = sum(len(ex) for ex in examples)
        res.measure("samples", len(examples), "samples", "packed into 1 row")
        res.measure("tokens", tokens, "tokens")
        res.measure("step_seconds", round(seconds, 3), "s")
        res.measure("gradient_checkpointing", checkpointing(session), "", "as onboard train runs the step")
        res.measure("precision", "bf16" if args.bf16 else "fp16" if args.fp16 else str(session.dtype).removeprefix("torch."))
        res.measure("adapter_tensors_changed", changed, "tensors", compare=">", limit=0)
        loss = losses[0] if losses else float("nan")
        res.measure("train_loss", round(loss, 6), "nats")
        if changed == 0:
            res.status, res.diagnosis = Status.FAIL, "FM-TRAIN-NOUPDATE"
            res.message = "one optimizer step changed no adapter weight"
            return res
        if not torch.isfinite(torch.tensor(loss)):
            res.status, res.diagnosis = Status.FAIL, "FM-TRAIN-LOSS"
            res.message = f"the training loss is {loss}"
            return res
        res.measure("stochastic_in_train_mode", stochastic, "", "two seeds give other logits: dropout")
        if stochastic:
            loss = eval_loss
            res.measure("train_loss_eval_mode", round(loss, 6), "nats", "the same packed batch, dropout off")
        ref = _reference_loss(session, examples)
        rtol = session.threshold("train_step.loss_rtol")
        rel = abs(loss - ref) / max(abs(ref), 1e-12)
        res.measure("loss_reference", round(ref, 6), "nats", "same samples run one by one")
        res.measure("loss_rel_diff", float(f"{rel:.3g}"), "", compare="<=", limit=rtol)
        if rel > rtol:
            res.status, res.diagnosis = Status.FAIL, "FM-TRAIN-LOSS"
            own = _own_loss_unpacked(model, session, examples, trainer)
            res.measure("own_loss_unpacked", round(own, 6), "nats", "the model's own loss, the samples padded, not packed")
            if abs(own - ref) <= rtol * max(abs(ref), 1e-12):
                why = "the model's own loss is right on the samples unpacked, so packing mixes them (see PACK001)"
            else:
                why = (f"the model's own loss is {own:.4f} on the samples unpacked too, given what the Trainer "
                       "passes: its loss is not the next-token loss of its logits (e.g. labels not shifted, or "
                       "num_items_in_batch misused)")
            res.message = f"the packed training step's loss {loss:.4f} is not the samples' loss {ref:.4f}: {why}"
            return res
        res.message = (f"one step on {tokens} packed tokens ran in {seconds:.1f} s; {changed} adapter tensors "
                       f"updated; loss {loss:.4f} = reference {ref:.4f}")
        return res


def _record_losses(trainer) -> list[float]:
    """The loss of every compute_loss call of this trainer, as the optimizer sees it."""
    losses: list[float] = []
    compute = trainer.compute_loss

    def recording(*args, **kwargs):
        out = compute(*args, **kwargs)
        losses.append(float((out[0] if isinstance(out, tuple) else out).detach()))
        return out

    trainer.compute_loss = recording
    return losses


def _names_missing_input(exc: Exception, base) -> bool:
    import inspect

    text = str(exc)
    params = inspect.signature(base.forward).parameters
    return any(n.endswith("type_ids") and n in text for n in params)


@torch.no_grad()
def _stochastic_in_train_mode(model, inputs) -> bool:
    """Whether two train-mode forwards of the same batch differ: dropout of any kind, found by behaviour."""
    was_training = model.training
    model.train()
    try:
        runs = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            runs.append(model(**inputs).logits)
    finally:
        model.train(was_training)
    return not torch.equal(*runs)


@torch.no_grad()
def _eval_loss(trainer, model, inputs) -> float:
    """The Trainer's own loss on the packed batch with the model in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    try:
        return float(trainer.compute_loss(model, dict(inputs)))
    finally:
        model.train(was_training)


@torch.no_grad()
def _own_loss_unpacked(model, session, examples, trainer) -> float:
    """The model's own loss on the samples as one right-padded batch, in eval mode: no packing involved. The
    forward gets what the Trainer's did (num_items_in_batch, where the Trainer passes it), so a loss that
    goes wrong with that count goes wrong here too and is not blamed on packing."""
    from onboard.harness.forward import batch_tensors

    model.eval()
    batch = batch_tensors(examples, session.device, session.pad_id)
    extra = {}
    if trainer.model_accepts_loss_kwargs:
        extra["num_items_in_batch"] = trainer._get_num_items_in_batch([batch], session.device)
    return float(model(**batch, use_cache=False, **extra).loss)


def _reference_loss(session, examples) -> float:
    """Token-mean loss of the samples run one by one, from the session's cached reference losses."""
    index = {id(ex): i for i, ex in enumerate(session.examples)}
    reference = session.reference_losses([index[id(ex)] for ex in examples])
    return float(torch.cat(list(reference.values())).mean())


def _restore(model, trainable: dict[str, torch.Tensor]) -> None:
    """Put the adapter back as it was: later checks and the report see the untrained model."""
    restore_parameters(model, trainable)
    model.eval()
