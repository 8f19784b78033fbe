"""KERN001: each speed lever gives the plain model's loss and LoRA gradients on a packed batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onboard.checks.base import SEQ2SEQ_NOT_PROBED, Check
from onboard.harness.result import Status
from onboard.harness.samemath import (SameMath, as_trained, first_line, loss_and_grads, modes_of,
                                      randomise_lora_b, restore_modes, shortest_row)
from onboard.harness.training import checkpointing, restore_parameters
from onboard.patches import get_patch, ids

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession

LEVERS = (ids.SPEED_PACKED_ATTENTION, ids.SPEED_COMPILED_LAYERS, ids.SPEED_BF16_ADAPTERS)  # tried in this order, each on top of those
# verified before it, against the plain model
ROW_SAMPLES = 4  # the shortest samples, packed into one row as training packs them


class KernelsCheck(Check):
    """What it does:
    For each speed lever onboard can train with (speed.packed_attention: packed rows attend per sample
    instead of through a dense block-diagonal mask; speed.compiled_layers: each decoder layer compiled on
    its own, CUDA only), runs one forward and backward of a packed row (the 4 shortest samples,
    position_ids restarting, no mask, as the packing collator gives them) with the model as the earlier
    checks left it, then again with the lever on, on top of the levers verified before it (what training
    runs is all of them together), and compares the loss and the gradients of every adapter weight. Each run
    is the step as training runs it: under the Trainer's mixed precision (bf16/fp16 autocast on CUDA) and, the
    levers' runs, under the setup's gradient checkpointing (non-reentrant, every n-th layer as asked; on by
    default on CUDA). When the setup checkpoints, the plain step is first run checkpointed too: in fp32
    checkpointing recomputes the same forward, so its loss and gradients equal the plain run's exactly (a
    clean null). The adapters' B matrices are set to small random values for the comparison (they start at
    zero, which leaves the A matrices without gradient) and put back after. The model is in eval mode: no
    dropout, the same function every time (the layers that checkpoint are put in training mode alone, since
    transformers checkpoints only then). In fp32 the lever must give the plain loss within kernels.loss_rtol
    (1e-5 relative) and the gradients within 10 times that. In bf16/fp16 two right computations differ by
    rounding, so each run is judged by its distance from the same model run in fp32 (the weights cast up
    for one pass, then back: exact): the lever may be at most kernels.rounding_factor (2) times as far as
    the plain run is, and never needs to be closer than the fixed tolerances (1e-2 for the loss, 1e-1 for
    the gradients). A lever that fails under checkpointing is run once more without it, to say which of the
    two it is; a lever that passes under it is run without it too (a training plan may turn checkpointing off,
    onboard.train.plan), and is verified only when both pass. The time of each run is recorded (informative; a tiny model on a CPU says nothing about speed).

    Why it matters:
    A faster kernel that computes other attention trains another model, and nothing in the loss curve
    says so. A lever is applied in training only once it has been shown to give this model's own math, in the
    step training runs: a lever verified without checkpointing can crash under it (a recomputed tensor of
    another shape) or read inputs the checkpointed layer no longer passes on.

    Failure modes:
    FM-KERN-MATH: a lever runs but gives another loss or other gradients: WARN, and the lever is left off;
    training is correct, only slower. Stock Llama 4 shows it: its decoder layers do not pass position_ids on
    to the attention function, so speed.packed_attention cannot see where the samples of a row start and
    attends across the whole row.
    FM-KERN-CKPT: under the setup's gradient checkpointing a lever crashes or changes the math while it gives
    the plain math without checkpointing (the lever is left off: training checkpoints), or checkpointing
    itself changes the step (no lever is judged; train without it). `fault:kern-ckpt` shows the first: a
    layer loop whose checkpointed branch gives the attention no position_ids.
    A lever that does not apply to the model, or raises on it with or without checkpointing (attention sinks,
    logit softcapping), is reported as not applicable with its reason: onboard's limit, not the model's fault.

    Fix:
    None needed: a lever that fails is not applied. Levers that pass are listed for training
    (`onboard train`, `onboard.apply_patches`).
    """

    code = "KERN001"
    runs_on = "slice"
    version = 3  # 2: not probed for seq2seq (SKIP); 3: under the setup's checkpointing and mixed precision
    name = "kernels"
    summary = "each speed lever gives the plain loss and LoRA gradients on a packed batch"
    requires = ("LORA001", "PACK001")  # a packed row that leaks has no plain math to compare a lever against
    needs_labels = True

    def run(self, session: ModelSession):
        if session.seq2seq:
            return self.result(Status.SKIP, SEQ2SEQ_NOT_PROBED)
        model = session.train_model
        batch = shortest_row(session, ROW_SAMPLES)
        rtol = session.threshold("kernels.loss_rtol")
        factor = session.threshold("kernels.rounding_factor")
        ckpt = checkpointing(session)
        res = self.result(Status.PASS, "")
        res.measure("packed_samples", int((batch.sample.unique() >= 0).sum()), "samples",
                    f"{batch.input_ids.shape[1]} tokens in one row")
        res.measure("gradient_checkpointing", ckpt, "", "the setup's: each lever runs under it, as training runs it")
        saved = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        modes = modes_of(model)
        kept = []  # the verified levers, on (in the session) until the check ends, also when it crashes
        on_before = set(session.applied)  # a lever the run had applied before this check stays applied
        verified, failed, skipped, ckpt_only = [], [], {}, {}

        def step(checkpointed: bool):
            with as_trained(session, model, checkpointed):
                return loss_and_grads(model, batch)

        try:
            randomise_lora_b(model, session.seed)
            model.eval()
            with as_trained(session, model, False):
                plain = SameMath.measure(model, batch, rtol, factor, res)
            if ckpt:  # checkpointing alone must give the step's math before a lever is judged under it
                try:
                    loss, grads, _ = step(True)
                except Exception as exc:  # noqa: BLE001 - the recompute's failure is the finding
                    return self._checkpointing_breaks(res, first_line(exc, 240))
                good, rel, grad_rel = plain.judge(res, "checkpointing", loss, grads)
                if not good:
                    return self._checkpointing_breaks(res, f"loss rel {rel:.2g}, gradients rel {grad_rel:.2g}")
            for lever in LEVERS:  # each on top of the levers verified before it: what training runs is all of them
                patch = get_patch(lever)
                reason = patch.applies_to(model)
                if lever == ids.SPEED_PACKED_ATTENTION and ids.PACKING_UNPACKED in session.applied:
                    reason = "training is unpacked (the fallback packing.unpacked): there are no packed rows"
                crashed = None
                if reason is None:
                    try:
                        session.apply_patch(patch)
                    except Exception as exc:  # noqa: BLE001 - a lever that cannot run this model is not used
                        reason = first_line(exc)
                    else:
                        try:
                            step(ckpt)  # a first call compiles or tunes: not timed
                            loss, grads, seconds = step(ckpt)
                        except Exception as exc:  # noqa: BLE001
                            crashed = first_line(exc, 240)
                if crashed is not None:
                    if ckpt and self._runs_without_checkpointing(step):
                        ckpt_only[lever] = f"crashes under gradient checkpointing ({crashed})"
                        _take_back(session, lever, on_before)
                        res.measure(f"{lever}", "fails under checkpointing", "", crashed)
                        continue
                    _take_back(session, lever, on_before)
                    reason = crashed
                if reason is not None:
                    skipped[lever] = reason
                    res.measure(f"{lever}", "not applicable", "", reason)
                    continue
                good, rel, grad_rel = plain.judge(res, lever, loss, grads)
                res.measure(f"{lever}.seconds", round(seconds, 4), "s",
                            "one forward and backward with this lever and those verified before it, informative")
                if hasattr(patch, "describe"):
                    res.measure(f"{lever}.path", patch.describe(model), "", "what the lever runs here")
                if ckpt:  # the lever without checkpointing too: a plan may train without it (onboard.train.plan)
                    loss, grads, _ = step(False)
                    good_without = plain.judge(res, f"{lever}.without_checkpointing", loss, grads)[0]
                else:
                    good_without = good
                if good and good_without:
                    verified.append((lever, rel, grad_rel))
                    kept.append(lever)
                    continue
                if ckpt and not good:  # is it the lever, or the lever under checkpointing?
                    if good_without:
                        ckpt_only[lever] = (f"changes the math under gradient checkpointing (loss rel {rel:.2g}, "
                                            f"gradients rel {grad_rel:.2g}); gives it without")
                        _take_back(session, lever, on_before)
                        continue
                failed.append((lever, rel, grad_rel))
                _take_back(session, lever, on_before)
        finally:
            for lever in reversed(kept):
                _take_back(session, lever, on_before)
            restore_parameters(model, saved)
            restore_modes(modes)
        res.enables = [lever for lever, _, _ in verified] or None
        if skipped:
            res.evidence["not_applicable"] = skipped
        if ckpt_only:
            res.evidence["fails_under_checkpointing"] = ckpt_only
        if failed or ckpt_only:
            res.status, res.diagnosis = Status.WARN, "FM-KERN-MATH" if failed else "FM-KERN-CKPT"
            parts = [f"{lever} changes the math (loss rel {rel:.2g}, gradients rel {g:.2g}): left off"
                     for lever, rel, g in failed]
            parts += [f"{lever} {why}: left off (training checkpoints)" for lever, why in ckpt_only.items()]
            res.message = "; ".join(parts)
            if verified:
                res.message += f"; verified: {', '.join(v for v, _, _ in verified)}"
            return res
        if not verified:
            res.status = Status.SKIP
            res.message = "no speed lever applies here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
            return res
        res.message = "verified for training: " + ", ".join(
            f"{lever} (loss rel {rel:.1g}, gradients rel {g:.1g})" for lever, rel, g in verified)
        if ckpt:
            res.message += ", under gradient checkpointing"
        return res

    @staticmethod
    def _runs_without_checkpointing(step) -> bool:
        try:
            step(False)
        except Exception:  # noqa: BLE001 - it fails either way: not applicable
            return False
        return True

    def _checkpointing_breaks(self, res, what: str):
        res.status, res.diagnosis = Status.WARN, "FM-KERN-CKPT"
        res.message = (f"the setup's gradient checkpointing changes the training step before any lever ({what}): no "
                       "lever is judged; train without it (--no-gradient-checkpointing)")
        return res


def _take_back(session: ModelSession, lever: str, on_before: set[str]) -> None:
    if lever not in on_before:
        session.revert_patch(lever)
