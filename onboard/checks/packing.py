"""PACK001: packed rows give each sample the loss it has alone, under the conventions trainers use."""

from __future__ import annotations

import torch

from onboard.checks.base import Check, FixAvailability
from onboard.harness.data import IGNORE, pack
from onboard.harness.forward import PackedBatch, batch_tensors, packed_losses, token_losses
from onboard.harness.result import Status

# name -> (forward kwargs builder, failure mode when this convention leaks)
CONVENTIONS = {
    "no_mask_default_cache": (lambda ids: {}, "FM-PACK-CACHE"),
    "ones_mask_no_cache": (lambda ids: {"attention_mask": torch.ones_like(ids), "use_cache": False}, "FM-PACK-MASK"),
    "no_mask_no_cache": (lambda ids: {"use_cache": False}, "FM-PACK-ISOLATION"),
}


class PackingCheck(Check):
    """What it does:
    Packs the samples into rows (position_ids restart at 0 for each sample) and compares every sample's
    loss in its packed row with its loss run alone. Three conventions are run, as training stacks feed
    packed rows: no attention mask with the model's default use_cache (DataCollatorWithFlattening), an
    all-ones attention mask, and no mask with use_cache=False. Any sample whose loss moves by more than
    the tolerance names its convention as leaking. The tolerance is 1e-3 nats in fp32 and 1e-2 in bf16/fp16,
    or 4 times the noise measured on the model itself (each sample in a right-padded batch vs alone) when
    that is larger: bf16 noise grows with the loss and the depth (0.04 nats on a random Llama-3-8B shape).

    Why it matters:
    transformers isolates packed samples only when it finds them from position_ids, which it does only
    with no attention mask and no cache. Otherwise every sample attends to the ones before it in the row:
    training silently learns from the wrong context, and the loss can even look lower.

    Failure modes:
    FM-PACK-CACHE: the default use_cache=True disables packed-sample detection.
    FM-PACK-MASK: an all-ones attention mask disables it.
    FM-PACK-ISOLATION: samples leak even with no mask and no cache: the model cannot train on packed rows.

    Fix:
    packing.no_cache_no_mask (safe): use_cache=False in the config, and the mask dropped on packed rows
    when it only marks right padding. Verified by re-running all three conventions.
    """

    code = "PACK001"
    name = "packing"
    summary = "packed rows (position_ids restart) match the samples run alone"
    requires = ("LORA001",)
    fix_availability = FixAvailability.SOMETIMES

    def run(self, session):
        rows = [r for r in pack(session.examples, session.pack_length) if len(set(r.sample)) > 1]
        if not rows:
            return self.result(Status.SKIP, f"no two samples fit in one row of {session.pack_length} tokens")
        reference = session.reference_losses()
        model = session.train_model
        noise = _noise(model, session, reference)
        floor = session.threshold("packing.tolerance")
        tol = max(floor, session.threshold("packing.noise_factor") * min(noise, session.threshold("packing.max_noise")))
        res = self.result(Status.PASS, "")
        res.measure("noise", float(f"{noise:.3g}"), "nats", "same samples as one right-padded batch vs alone")
        res.measure("tolerance", float(f"{tol:.3g}"), "nats", f"max({floor:g}, noise_factor x noise)")
        res.measure("rows", len(rows), "rows")
        res.measure("packed_samples", sum(len(set(r.sample)) for r in rows), "samples")
        leaking, worst_detail = [], {}
        batch = PackedBatch.from_rows(rows, session.device, session.pad_id)
        for name, (kwargs_for, mode) in CONVENTIONS.items():
            packed = packed_losses(model, batch, session.device, **kwargs_for(batch.input_ids))
            diffs = {s: (p.mean() - reference[s].mean()).item() for s, p in packed.items() if p.numel()}
            worst = max(abs(d) for d in diffs.values())
            res.measure(f"max_abs_diff_{name}", float(f"{worst:.3g}"), "nats", f"<= {tol:g}")
            if worst > tol:
                leaking.append((name, mode))
            worst_detail[name] = {str(s): round(d, 5) for s, d in sorted(diffs.items())}
        res.evidence["per_sample_diff"] = worst_detail
        res.evidence["per_sample_unpacked_loss"] = [round(r.mean().item(), 4) if r.numel() else None for r in reference]
        if not leaking:
            res.message = f"{res.measurements['packed_samples'].value} packed samples match their unpacked loss in all conventions"
            return res
        names = [n for n, _ in leaking]
        res.status = Status.FAIL
        if "no_mask_no_cache" in names:
            res.diagnosis = "FM-PACK-ISOLATION"
            res.message = "samples leak into each other even with no mask and use_cache=False: packing is unsafe for this model"
            return res
        res.diagnosis = leaking[0][1]
        res.proposed_patch = "packing.no_cache_no_mask"
        res.message = "cross-sample attention with " + " and ".join(names) + " (" + ", ".join(m for _, m in leaking) + ")"
        return res



@torch.no_grad()
def _noise(model, session, reference) -> float:
    """The largest change of a sample's mean loss between running it alone and in a right-padded batch with
    its mask: the same math in other kernel shapes, i.e. the dtype's numerical noise on this model."""
    examples = [ex for ex in session.examples if ex.n_trained][:16]
    index = {id(ex): i for i, ex in enumerate(session.examples)}
    batch = batch_tensors(examples, session.device, session.pad_id)
    labels = batch.pop("labels")
    losses = token_losses(model(**batch, use_cache=False).logits, labels).cpu()
    trained = labels.cpu() != IGNORE
    diffs = [abs(losses[i][trained[i]].mean().item() - reference[index[id(ex)]].mean().item())
             for i, ex in enumerate(examples)]
    return max(diffs, default=0.0)
