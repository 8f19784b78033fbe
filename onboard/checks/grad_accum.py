"""GA001: the HF Trainer's gradient accumulation gives the loss and gradients of one big batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import tempfile

import torch

from onboard.checks.base import Check, FixAvailability
from onboard.harness.data import IGNORE
from onboard.harness.forward import batch_tensors
from onboard.harness.result import Status
from onboard.patches.base import unwrap
from onboard.patches import ids

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession

STEPS = 2  # micro-batches of the accumulated run
PER_STEP = 2  # examples per micro-batch


class GradAccumCheck(Check):
    """What it does:
    Runs the same examples through the HF Trainer's training step twice: as one batch of 4 with no
    accumulation, and as 2 micro-batches of 2 with gradient_accumulation_steps=2, and compares the summed
    loss and the LoRA gradients. The micro-batches hold unequal numbers of trained tokens, as packed
    variable-length data gives: the accumulated run must weigh every token as the one batch does and equal it
    (up to float noise: 1e-4 relative in fp32, 2e-2 in bf16).

    Why it matters:
    The Trainer passes num_items_in_batch (the trained tokens of the accumulated batch) to a forward that
    declares it takes loss kwargs and then does not divide by the accumulation steps; else it averages the
    micro-batches' mean losses. A forward that swallows the count trains with loss and gradients k times too
    large; a class that refuses the count (accepts_loss_kwargs = False) gets a mean of micro-batch means,
    which mis-weighs tokens whenever micro-batches differ in size. No single forward shows either.

    Failure modes:
    FM-LOSS-GA (the forward takes the count and ignores it: accumulated loss about k x the single batch's).
    FM-LOSS-GA-WEIGHTS (the Trainer passes no count, the model refusing loss kwargs: micro-batch means are
    averaged, and tokens of a smaller micro-batch weigh more).

    Fix:
    Which one, by the model's behaviour (its loss given twice its tokens' count halves, or does not):
    loss.accepts_num_items (safe) for a class that refuses the count while its loss takes it; else
    loss.num_items_in_batch (safe): the forward's mean loss rescaled to its token sum over the count, the
    model declared to take it. Verified by re-running both schedules.
    """

    code = "GA001"
    runs_on = "slice"
    name = "grad_accum"
    summary = "k accumulated micro-batches of unequal sizes give the loss and gradients of one batch"
    requires = ("LORA001",)
    fix_availability = FixAvailability.SOMETIMES
    needs_labels = True

    def run(self, session: ModelSession):
        from transformers import Trainer

        from onboard.harness.training import training_arguments

        chosen = sorted((ex for ex in session.examples if sum(l != IGNORE for l in ex.labels) > 1), key=len)
        chosen = chosen[: STEPS * PER_STEP]
        if len(chosen) < STEPS * PER_STEP:
            return self.result(Status.SKIP, f"needs {STEPS * PER_STEP} examples with trained tokens")
        batch = _uneven(batch_tensors(chosen, session.device, session.pad_id))
        micro = [{k: v[i * PER_STEP:(i + 1) * PER_STEP] for k, v in batch.items()} for i in range(STEPS)]
        counts = [int((mb["labels"][:, 1:] != IGNORE).sum()) for mb in micro]

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
                # which fix: asked of the forward only when accumulation is wrong (two more forwards)
                wrong = not (rel <= rtol and grad_rel <= rtol * 10)
                takes_count = _loss_takes_count(model, micro[0]) if wrong and one_loss else None

        res = self.result(Status.PASS, "")
        res.measure("trainer_passes_num_items", accepts)
        res.measure("micro_batch_tokens", " + ".join(map(str, counts)), "trained tokens", "unequal, as packing gives")
        res.measure("loss_one_batch", round(one_loss, 6), "nats", f"{STEPS * PER_STEP} examples, GA 1")
        res.measure("loss_accumulated", round(acc_loss, 6), "nats", f"{STEPS} x {PER_STEP} examples, GA {STEPS}")
        res.measure("loss_ratio", round(ratio, 4), "accumulated/one", "1")
        res.measure("loss_rel_diff", float(f"{rel:.3g}"), "", compare="<=", limit=rtol)
        res.measure("grad_rel_diff", float(f"{grad_rel:.3g}"), "", compare="<=", limit=rtol * 10)
        if takes_count is not None:
            res.measure("loss_takes_count", takes_count, "", "the forward's loss given twice its tokens' count halves")
        if rel <= rtol and grad_rel <= rtol * 10:
            res.message = (f"GA {STEPS} over micro-batches of {' and '.join(map(str, counts))} trained tokens matches "
                           f"one batch (loss rel {rel:.1g}, gradients rel {grad_rel:.1g})")
            return res
        res.status = Status.FAIL
        res.message = f"GA {STEPS} gives {ratio:.3f} x the loss of one batch (gradients rel diff {grad_rel:.2g})"
        name = type(unwrap(model)).__name__
        if accepts and not takes_count:
            res.diagnosis, res.proposed_patch = "FM-LOSS-GA", ids.LOSS_NUM_ITEMS
            res.message += (f": {name}.forward takes num_items_in_batch but its loss ignores it, and the Trainer "
                            "skips dividing by the accumulation steps")
        elif not accepts:
            res.diagnosis = "FM-LOSS-GA-WEIGHTS"
            res.proposed_patch = ids.LOSS_ACCEPTS_NUM_ITEMS if takes_count else ids.LOSS_NUM_ITEMS
            res.message += (f": {name} declares it takes no loss kwargs, so the Trainer averages the micro-batches' "
                            f"mean losses ({' and '.join(map(str, counts))} trained tokens) instead of weighing "
                            "every token the same"
                            + ("; its loss does take the count" if takes_count else ""))
        return res


def _uneven(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch with the first micro-batch's rows keeping half their trained tokens (at least 1): micro-batches
    of unequal trained tokens, as packed variable-length data gives, whatever the data's lengths."""
    labels = batch["labels"].clone()
    trained = labels[:, 1:] != IGNORE  # the shifted targets the loss counts
    rank = trained.cumsum(1)
    keep = (trained.sum(1, keepdim=True) + 1) // 2
    first = torch.zeros_like(trained)
    first[:PER_STEP] = True
    labels[:, 1:][trained & first & (rank > keep)] = IGNORE
    return {**batch, "labels": labels}


@torch.no_grad()
def _loss_takes_count(model, batch: dict[str, torch.Tensor]) -> bool:
    """Whether the forward's loss uses num_items_in_batch: given twice its own trained tokens, it halves."""
    n = (batch["labels"][:, 1:] != IGNORE).sum()
    try:
        plain = model(**batch).loss
        counted = model(**batch, num_items_in_batch=2 * n).loss
    except TypeError:  # a forward that refuses the keyword
        return False
    if plain is None or counted is None or float(plain) == 0.0:
        return False
    return abs(float(counted) / float(plain) - 0.5) < 0.05


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
