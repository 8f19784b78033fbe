"""TRAIN001: one real optimizer step through the HF Trainer, with the packing collator onboard train uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

import tempfile
import time

import torch

from onboard.checks.base import Check, FixAvailability
from onboard.harness.data import attention_span, long_example
from onboard.harness.forward import grad_rel_diff
from onboard.harness.result import Status
from onboard.harness.samemath import randomise_lora_b
from onboard.harness.training import restore_parameters
from onboard.patches.base import unwrap
from onboard.patches import ids, training_collator
from onboard.patches.packing import unpacked_cost

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession

SAMPLES = 4


class TrainStepCheck(Check):
    """What it does:
    Runs one optimizer step of LoRA training with the HF Trainer on a few samples, packed by the collator
    `onboard train` uses (DataCollatorWithFlattening: one row, position_ids restarting per sample, no
    mask), with every patch verified so far applied. The samples are the shortest of the data; where the model
    declares a sliding window or attention chunk, one of them is longer than it. It checks that the step runs,
    that the adapter weights change, and that the step's loss and every adapter's gradient equal those of the
    same samples run one by one (loss relative 1e-5 in fp32, gradients 1e-4), which ties the packed training
    path to the reference. In bf16/fp16 both are run once more with the weights in fp32 (cast back exactly):
    the step's distance from that fp32 reference may be at most 2 x the same-dtype reference's own, and at
    least train_step.rounding_floor (1e-3; gradients 1e-2); without room for the fp32 copy, 2e-2 (0.2). Tiny models
    in bf16 measure 0.004-0.02 from the fp32 reference, and the step the same; tiny GPT-OSS with one full mask for
    every layer (its sliding window lost) steps with gradients 0.075 off in fp32 and bf16 alike while its loss is
    only 3.7e-4 off, which is why gradients are judged, not the loss alone. A model that is
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
    runs_on = "whole"
    whole_only = True
    version = 2  # 2: seq2seq samples (their labels are the decoder's input) in the reference
    name = "train_step"
    summary = "one Trainer step with the packing collator runs and updates the adapter"
    requires = ("LORA001",)
    fix_availability = FixAvailability.SOMETIMES
    needs_labels = True

    def run(self, session: ModelSession):
        from transformers import PrinterCallback, Trainer

        from onboard.harness.training import (checkpointing, prepare_for_checkpointing, training_arguments,
                                              undo_checkpointing)

        model = session.train_model
        examples = step_samples(session)
        # what onboard train feeds the model: packed positions from where the model numbers a sample alone
        collator = training_collator(session.applied, session.pad_id, position_start=session.position_start)
        unpacked = ids.PACKING_UNPACKED in session.applied
        data = [{"input_ids": ex.input_ids, "labels": ex.labels} for ex in examples]
        trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        res = self.result(Status.PASS, "")
        start = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as out:
                # the arguments `onboard train` builds (precision, gradient checkpointing), one step of them
                # (no clipping: the gradient compared is the step's own, not its rescaled copy)
                args = training_arguments(session, out, per_device_train_batch_size=SAMPLES, max_steps=1,
                                          learning_rate=1e-3, logging_steps=1, max_grad_norm=0.0)
                prepare_for_checkpointing(model, args)
                trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator)
                trainer.remove_callback(PrinterCallback)  # the step's log goes to the report, not stdout
                packed = {k: v.to(session.device) if torch.is_tensor(v) else v for k, v in collator(data).items()}
                # dropout (nn.Dropout, functional, any name its config gives it) shows as a train-mode forward
                # that differs between two seeds; the loss is then compared with the model in eval mode
                stochastic = _stochastic_in_train_mode(model, packed)
                eval_loss = _eval_loss(trainer, model, packed) if stochastic else None
                losses = _record_losses(trainer)  # exact: the Trainer's log rounds to 4 digits
                # every adapter gets a gradient: lora_B off zero (at PEFT's init every lora_A gradient is exactly 0)
                reference_grads = reference_step_loss = perturbed = fp32_reference = None
                if not stochastic:
                    randomise_lora_b(model, session.seed)
                    perturbed = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
                    reference_step_loss, reference_grads = _reference_grads(model, examples, session.device)
                    # bf16/fp16: the same reference with the weights in fp32 (cast back exactly), what both the
                    # step and the reference are judged by (None in fp32, or where the fp32 copy does not fit)
                    fp32_reference = _fp32_reference(model, examples, session.device)
                captured = _grad_capture(model)
                trainer.add_callback(captured)
                trainer.train()
            started = perturbed if perturbed is not None else trainable  # what the optimizer step started from
            changed = sum(not torch.equal(p.detach(), started[n]) for n, p in model.named_parameters()
                          if n in started)
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
        if unpacked:
            res.evidence["fallback_cost"] = unpacked_cost([len(ex) for ex in session.examples])[1]
        res.measure("samples", len(examples), "samples", "right-padded, one micro-batch (packing.unpacked)" if unpacked
                    else "packed into 1 row")
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
        alone = _reference_loss(session, examples)  # the adapter as it was (lora_B zero), cached by the session
        ref = alone if reference_step_loss is None else reference_step_loss
        rtol = session.threshold("train_step.loss_rtol")
        rel = abs(loss - ref) / max(abs(ref), 1e-12)
        res.measure("loss_reference", round(ref, 6), "nats", "same samples run one by one")
        grad_rel = None
        if reference_grads is not None and captured.grads is not None:
            grad_rel = grad_rel_diff(reference_grads, captured.grads)
        # what is judged: in fp32 the step against the samples one by one; in bf16/fp16 the step's distance from
        # the fp32 reference, allowed train_step.rounding_factor x the bf16 reference's own (KERN001's rule), and at
        # least train_step.rounding_floor (gradients 10 x): a limit measured on this model rather than a fixed 2e-2
        loss_off, loss_limit, grad_off, grad_limit = rel, rtol, grad_rel, rtol * 10
        if fp32_reference is not None and grad_rel is not None:
            factor = session.threshold("train_step.rounding_factor")
            floor = session.threshold("train_step.rounding_floor")
            plain_loss, plain_grad = _distance(ref, reference_grads, *fp32_reference)
            loss_off, grad_off = _distance(loss, captured.grads, *fp32_reference)
            loss_limit, grad_limit = max(factor * plain_loss, floor), max(factor * plain_grad, floor * 10)
            res.measure("reference_vs_fp32_loss_rel", float(f"{plain_loss:.3g}"), "",
                        "the samples one by one in this dtype against fp32: their own rounding")
            res.measure("reference_vs_fp32_grad_rel", float(f"{plain_grad:.3g}"), "")
            res.measure("loss_rel_diff", float(f"{rel:.3g}"), "", "against the samples one by one in this dtype")
            res.measure("vs_fp32_loss_rel", float(f"{loss_off:.3g}"), "", compare="<=", limit=float(f"{loss_limit:.3g}"))
            if grad_rel is not None:
                res.measure("grad_rel_diff", float(f"{grad_rel:.3g}"), "", "against the samples one by one in this dtype")
            res.measure("vs_fp32_grad_rel", float(f"{grad_off:.3g}"), "", compare="<=", limit=float(f"{grad_limit:.3g}"),
                        note="(every adapter's gradient in the step against the fp32 reference, lora_B off zero)")
        else:
            res.measure("loss_rel_diff", float(f"{rel:.3g}"), "", compare="<=", limit=rtol)
            if grad_rel is not None:
                res.measure("grad_rel_diff", float(f"{grad_rel:.3g}"), "", compare="<=", limit=rtol * 10,
                            note="(every adapter's gradient in the step vs the samples run one by one, lora_B off zero)")
        if loss_off <= loss_limit and grad_off is not None and grad_off > grad_limit:
            res.status, res.diagnosis = Status.FAIL, "FM-TRAIN-LOSS"
            res.message = (f"the training step's loss matches the samples' ({rel:.2g} relative) but its adapter "
                           f"gradients do not: {grad_rel:.3g} relative to the samples run one by one"
                           + (f" ({grad_off:.3g} from fp32, limit {grad_limit:.3g})" if fp32_reference else ""))
            return res
        if loss_off > loss_limit:
            res.status, res.diagnosis = Status.FAIL, "FM-TRAIN-LOSS"
            if perturbed is not None:  # the adapter the step started from
                restore_parameters(model, perturbed)
            try:
                own = _own_loss_unpacked(model, session, examples, trainer)
            finally:
                _restore(model, trainable)
            res.measure("own_loss_unpacked", round(own, 6), "nats", "the model's own loss, the samples padded, not packed")
            if abs(own - ref) <= rtol * max(abs(ref), 1e-12):
                why = ("the model's own loss is right on the samples unpacked, so packing mixes them (PACK001: "
                       + _packing_mechanism(session) + ")")
                if not unpacked:  # what PACK001 verified does not hold in a training step: train unpacked
                    res.fallback_patch = ids.PACKING_UNPACKED
            else:
                why = (f"the model's own loss is {own:.4f} on the samples unpacked too, given what the Trainer "
                       "passes: its loss is not the next-token loss of its logits (e.g. labels not shifted, or "
                       "num_items_in_batch misused)")
            res.message = (f"the {'right-padded' if unpacked else 'packed'} training step's loss {loss:.4f} is not the samples' "
                           f"loss {ref:.4f}: {why}")
            return res
        res.message = (f"one step on {tokens} {'right-padded' if unpacked else 'packed'} tokens ran in {seconds:.1f} s; "
                       f"{changed} adapter tensors updated; loss {loss:.4f} = reference {ref:.4f}"
                       + (f", adapter gradients to {grad_rel:.1g}" if grad_rel is not None else ""))
        return res


def step_samples(session: ModelSession) -> list:
    """The samples of the step: the shortest of the data, and where the model declares a sliding window or an
    attention chunk, the last replaced by one longer than it (the data's samples one after another), so the
    step crosses every window and chunk as training's samples do."""
    examples = sorted(session.examples, key=len)[:SAMPLES]
    span = attention_span(unwrap(session.model).config, session.max_length)
    if span and examples and max(len(ex) for ex in examples) <= span:
        examples[-1] = long_example(session.examples, min(span + 32, session.max_length))
    return examples


def _packing_mechanism(session: ModelSession) -> str:
    """What PACK001 measured, in a few words, for TRAIN001's explanation."""
    packing = session.results.get("PACK001")
    if packing is not None and packing.diagnosis:
        return f"{packing.diagnosis}: {packing.message[:160]}"
    if packing is not None and packing.status.value == "PASS":
        return ("it found the samples apart in a packed forward; the training step's own path, in train mode, does "
                "not keep them apart")
    return "see its findings"


def _grad_capture(model):
    """A Trainer callback keeping every adapter gradient just before the optimizer steps (its `grads`)."""
    from transformers import TrainerCallback

    class GradCapture(TrainerCallback):
        grads = None

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters()
                          if p.requires_grad and p.grad is not None}

    return GradCapture()


def _fp32_reference(model, examples, device):
    """_reference_grads with every floating weight in fp32 for that pass (cast back exactly); None when the model
    is fp32 already or the fp32 copy does not fit."""
    from onboard.harness.samemath import fp32_weights

    try:
        with fp32_weights(model) as cast:
            return _reference_grads(model, examples, device) if cast else None
    except torch.OutOfMemoryError:
        return None


def _distance(loss, grads, ref_loss, ref_grads) -> tuple[float, float]:
    return abs(loss - ref_loss) / max(abs(ref_loss), 1e-12), grad_rel_diff(ref_grads, grads)


def _reference_grads(model, examples, device) -> tuple[float, dict[str, torch.Tensor]]:
    """The samples' token-mean next-token loss and its adapter gradients, each sample run alone: the ground truth
    a training step's loss and gradient must equal."""
    from onboard.harness.forward import example_inputs, token_losses

    total = sum(ex.n_trained for ex in examples)
    model.zero_grad(set_to_none=True)
    was_training = model.training
    model.train()  # the mode the Trainer steps in (only a model without dropout gets here): Gemma 3n's AltUp
    # correction adapters, for one, are on the loss path in eval mode and not in train mode
    loss = 0.0
    for ex in examples:
        labels = torch.tensor([ex.labels], device=device)
        logits = model(**example_inputs(ex, device), use_cache=False).logits
        part = token_losses(logits, labels, seq2seq=ex.seq2seq).sum() / total
        part.backward()
        loss += part.item()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters()
             if p.requires_grad and p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return loss, grads


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
def _own_loss_unpacked(model, session: ModelSession, examples, trainer) -> float:
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


def _reference_loss(session: ModelSession, examples) -> float:
    """Token-mean loss of the samples run one by one, from the session's cached reference losses (a sample not
    of the data, the long one, run here)."""
    from onboard.harness.forward import example_losses

    index = {id(ex): i for i, ex in enumerate(session.examples)}
    reference = session.reference_losses([index[id(ex)] for ex in examples if id(ex) in index])
    extra = [example_losses(session.train_model, ex, session.device) for ex in examples if id(ex) not in index]
    return float(torch.cat([*reference.values(), *extra]).mean())


def _restore(model, trainable: dict[str, torch.Tensor]) -> None:
    """Put the adapter back as it was: later checks and the report see the untrained model."""
    restore_parameters(model, trainable)
    model.eval()
