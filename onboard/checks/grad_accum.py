"""GA001: the HF Trainer's gradient accumulation gives the loss and gradients of one big batch."""

from __future__ import annotations

import tempfile

import torch

from onboard.checks.base import Check, FixAvailability
from onboard.harness.data import IGNORE
from onboard.harness.forward import batch_tensors
from onboard.harness.result import Status
from onboard.patches.base import unwrap
from onboard.patches import ids

STEPS = 2  # micro-batches of the accumulated run
PER_STEP = 2  # examples per micro-batch


class GradAccumCheck(Check):
    """What it does:
    Runs the same examples through the HF Trainer's training step twice: as one batch of 4 with no
    accumulation, and as 2 micro-batches of 2 with gradient_accumulation_steps=2, and compares the summed
    loss and the LoRA gradients. Each example keeps the same number of trained tokens, so the accumulated
    run must equal the single batch exactly (up to float noise: 1e-4 relative in fp32, 2e-2 in bf16).

    Why it matters:
    The Trainer takes a forward with **kwargs as consuming num_items_in_batch and then skips dividing by
    the accumulation steps. A forward that ignores the count trains with loss and gradients k times too
    large (logged loss too), which no single forward shows.

    Failure modes:
    FM-LOSS-GA (accumulated loss = k x the single-batch loss while the Trainer believes the model takes
    loss kwargs).

    Fix:
    loss.num_items_in_batch (safe): mark the model as not consuming loss kwargs, so the Trainer divides
    by the accumulation steps; verified by re-running both schedules.
    """

    code = "GA001"
    name = "grad_accum"
    summary = "k accumulated micro-batches give the loss and gradients of one batch"
    requires = ("LORA001",)
    fix_availability = FixAvailability.SOMETIMES
    needs_labels = True

    def run(self, session):
        from transformers import Trainer

        from onboard.harness.training import training_arguments

        chosen = sorted((ex for ex in session.examples if sum(l != IGNORE for l in ex.labels) > 1), key=len)
        chosen = chosen[: STEPS * PER_STEP]
        if len(chosen) < STEPS * PER_STEP:
            return self.result(Status.SKIP, f"needs {STEPS * PER_STEP} examples with trained tokens")
        batch = _equal_label_counts(batch_tensors(chosen, session.device, session.pad_id))
        micro = [{k: v[i * PER_STEP:(i + 1) * PER_STEP] for k, v in batch.items()} for i in range(STEPS)]

        model = session.train_model
        with tempfile.TemporaryDirectory() as out:
            args = training_arguments(session, out, per_device_train_batch_size=PER_STEP,
                                      gradient_accumulation_steps=STEPS)
            trainer = Trainer(model=model, args=args)
            accepts = bool(trainer.model_accepts_loss_kwargs)
            with _no_train_mode(model):  # dropout off: both schedules must see the same function
                one_loss, one_grads = _schedule(trainer, model, [batch])
                acc_loss, acc_grads = _schedule(trainer, model, micro)

        rtol = session.threshold("grad_accum.loss_rtol")
        ratio = acc_loss / one_loss if one_loss else float("inf")
        rel = abs(acc_loss - one_loss) / max(abs(one_loss), 1e-12)
        grad_rel = float((acc_grads - one_grads).norm() / one_grads.norm().clamp(min=1e-30))
        res = self.result(Status.PASS, "")
        res.measure("trainer_passes_num_items", accepts)
        res.measure("loss_one_batch", round(one_loss, 6), "nats", f"{STEPS * PER_STEP} examples, GA 1")
        res.measure("loss_accumulated", round(acc_loss, 6), "nats", f"{STEPS} x {PER_STEP} examples, GA {STEPS}")
        res.measure("loss_ratio", round(ratio, 4), "accumulated/one", "1")
        res.measure("loss_rel_diff", float(f"{rel:.3g}"), "", compare="<=", limit=rtol)
        res.measure("grad_rel_diff", float(f"{grad_rel:.3g}"), "", compare="<=", limit=rtol * 10)
        if rel <= rtol and grad_rel <= rtol * 10:
            res.message = f"GA {STEPS} matches one batch (loss rel {rel:.1g}, gradients rel {grad_rel:.1g})"
            return res
        res.status = Status.FAIL
        res.message = f"GA {STEPS} gives {ratio:.3f} x the loss of one batch (gradients rel diff {grad_rel:.2g})"
        if accepts and abs(ratio - STEPS) < 0.05 * STEPS:
            res.diagnosis, res.proposed_patch = "FM-LOSS-GA", ids.LOSS_NUM_ITEMS
            res.message += (f": {type(unwrap(model)).__name__}.forward takes **kwargs but does not divide by "
                            "num_items_in_batch, and the Trainer skips dividing by the accumulation steps")
        return res


def _equal_label_counts(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the first n trained tokens of every example (n = the fewest any has): equal-sized
    micro-batches then weigh tokens the same, so only a normalisation bug can tell the schedules apart."""
    labels = batch["labels"].clone()
    trained = labels[:, 1:] != IGNORE  # the shifted targets the loss counts
    n = int(trained.sum(1).min())
    rank = trained.cumsum(1)
    labels[:, 1:][trained & (rank > n)] = IGNORE
    return {**batch, "labels": labels}


def _schedule(trainer, model, micro_batches):
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = len(micro_batches)
    n_items = trainer._get_num_items_in_batch(micro_batches, micro_batches[0]["input_ids"].device)
    total = sum(float(trainer.training_step(model, dict(mb), n_items)) for mb in micro_batches)
    grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().flatten()
                       for p in params])
    model.zero_grad(set_to_none=True)
    return total, grads


class _no_train_mode:
    """training_step calls model.train(); keep every module in eval mode (no dropout) meanwhile."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.model.train = lambda mode=True: self.model
        return self

    def __exit__(self, *exc):
        del self.model.train
        self.model.eval()
