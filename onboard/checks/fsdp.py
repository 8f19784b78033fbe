"""FSDP001: the model sharded with FSDP2 over N processes trains as it does in one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onboard.checks.base import SEQ2SEQ_NOT_PROBED, Check, FixAvailability
from onboard.harness.result import Status
from onboard.patches import ids

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession


class FsdpCheck(Check):
    """What it does:
    With `--nproc N` (N >= 2), starts N processes with torchrun, as multi-GPU LoRA training is launched (gloo on
    the CPU, NCCL with one GPU per process), and shards the model with PyTorch FSDP2 (`fully_shard`) as training
    would: one unit per module of a class the model's `_no_split_modules` names, the model itself last. Every
    process builds the model from the same setup and seed, with LoRA and the patches the checks before verified,
    as training applies them (the fused loss on CUDA, where the sharded step then runs it; the speed levers aside:
    they are judged in one process). On one packed row it measures, against
    the same model unsharded in one process (rank 0's copy): the loss of a training step, every adapter gradient
    gathered (its shape, and whether every rank holds a gradient for its shard), the adapter weights after one
    AdamW update, the logits after it, and the logits of a fresh single-process model into which PEFT loaded the
    adapter saved from the sharded run (the full state dict gathered to rank 0). In fp32 all of these are exactly
    equal on a healthy model (0.0 on every tiny architecture the suite shards). It also records whether a model
    that ties its output layer to its input embeddings still does after sharding.

    Why it matters:
    A new architecture's first failure on several GPUs is a sharding failure: a `_no_split_modules` that names no
    class of the model (peft#2166, verl#6289) leaves one unit and every parameter gathered at once, the memory
    sharding was meant to save; adapters created with the wrong shapes, a tied head sharded apart, an adapter saved
    from shards that does not load. None of these shows in one process.

    Failure modes:
    FM-FSDP-TIED: the model ties its output layer to its input embeddings and the classes `_no_split_modules` names
    put the two in different units (stock RoBERTa as a causal LM names RobertaEmbeddings): torch's FSDP2 refuses
    to shard a parameter shared across units. FAIL (sharded training cannot start); fix fsdp.wrap_class, which
    keeps both in the model's own unit.
    FM-FSDP-WRAP: `_no_split_modules` names no class the model has: the model is one FSDP unit. WARN (training is
    right, its memory is not sharded); fix fsdp.wrap_class.
    A sharded step whose loss, adapter gradients, update or reloaded adapter differ from one process beyond
    fsdp.rtol (gradients, update and logits 10 times it), a gradient missing or of another shape, or a rank
    without one, is reported with the numbers as ERROR: no model in onboard's catalog shows such a failure yet
    (24 tiny architectures and SmolLM2 shard exactly), so onboard does not yet claim it is the model's. A crash
    while sharding is ERROR too, with its trace.

    Fix:
    fsdp.wrap_class: FSDP wraps the decoder layers found in the module tree (and nothing else); verified by
    sharding again.
    """

    code = "FSDP001"
    name = "fsdp"
    summary = "the model sharded with FSDP2 over N processes trains as in one"
    requires = ("LORA001",)
    fix_availability = FixAvailability.SOMETIMES
    runs_on = "whole"
    whole_only = True

    def run(self, session: ModelSession):
        from onboard.harness.fsdp import launch

        nproc = session.setup.nproc
        if nproc < 2:
            return self.result(Status.SKIP, "one process (--nproc N shards the model over N processes)")
        if session.seq2seq:
            return self.result(Status.SKIP, SEQ2SEQ_NOT_PROBED)
        rtol = session.threshold("fsdp.rtol")
        out = launch(session.setup, list(session.applied), session.patch_options, nproc)
        res = self.result(Status.PASS, "")
        for key, unit in (("world_size", "processes"), ("backend", ""), ("units", "units")):
            if key in out:
                res.measure(key, out[key], unit)
        if "no_split_modules" in out:
            res.measure("no_split_modules", out["no_split_modules"], "", "the classes the model names for wrapping")
            res.measure("wrap_classes", out["wrap_classes"], "", "of them, those its module tree holds")
        if out.get("tied_before") is not None:
            res.measure("tied_after_sharding", out["tied_after"], "",
                        "the output layer and the input embeddings one parameter after sharding (frozen under LoRA)")
        if out.get("tied_apart"):  # before any error: sharding them apart is what FSDP2 refuses
            res.status, res.diagnosis = Status.FAIL, "FM-FSDP-TIED"
            res.proposed_patch = ids.FSDP_WRAP_CLASS
            res.message = (f"the output layer is tied to the input embeddings, and _no_split_modules "
                           f"({', '.join(out['wrap_classes'])}) puts them in different FSDP units")
            if "error" in out:
                res.message += f": {out['error']}"
            return res
        if "error" in out:
            res.status = Status.ERROR
            res.message = f"sharding over {nproc} processes failed: {out['error']}"
            if out.get("trace"):
                res.evidence["trace"] = out["trace"]
            return res
        for key, limit in (("loss_rel_diff", rtol), ("grad_rel_diff", 10 * rtol), ("update_rel_diff", 10 * rtol),
                           ("logits_rel_diff_single", 10 * rtol), ("saved_logits_rel_diff", 10 * rtol)):
            if out.get(key) is not None:
                res.measure(key, float(f"{out[key]:.3g}"), "", compare="<=", limit=limit)
        res.measure("grads_on_every_rank", out["grads_on_every_rank"], "")
        wrong = out["grads_missing"] + out["grad_shape_mismatch"]
        off = [k for k, lim in (("loss_rel_diff", rtol), ("grad_rel_diff", 10 * rtol), ("update_rel_diff", 10 * rtol),
                                ("saved_logits_rel_diff", 10 * rtol)) if out.get(k) is None or out[k] > lim]
        if wrong or off or not out["grads_on_every_rank"]:
            # measured, but no model in onboard's catalog shows such a failure yet: said as onboard's limit
            res.status = Status.ERROR
            parts = [f"{k} {out.get(k)}" for k in off]
            if wrong:
                parts.append(f"adapter gradients missing or of another shape: {', '.join(wrong[:3])}")
            if not out["grads_on_every_rank"]:
                parts.append("a rank holds no gradient for its shard")
            res.message = (f"sharded over {nproc} processes the step is not one process's ({'; '.join(parts)}); no "
                           "model in onboard's fault catalog shows this yet, so it is not judged as the model's")
            return res
        if not out["wrap_classes"]:
            res.status, res.diagnosis = Status.WARN, "FM-FSDP-WRAP"
            res.proposed_patch = ids.FSDP_WRAP_CLASS
            named = ", ".join(out["no_split_modules"]) or "nothing"
            res.message = (f"_no_split_modules names {named}, which the model does not have: FSDP wraps it as one "
                           "unit, every parameter gathered at once on every rank")
            return res
        res.message = (f"sharded over {nproc} processes ({out['backend']}) in {out['units']} units by "
                       f"{', '.join(out['wrap_classes'])}: loss, adapter gradients and update equal one process's "
                       f"(rel {out['loss_rel_diff']:.1g}, {out['grad_rel_diff']:.1g}, {out['update_rel_diff']:.1g}); "
                       f"the saved adapter loads with the same logits")
        return res
