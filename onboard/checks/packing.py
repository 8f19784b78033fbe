"""PACK001: a sample in a packed row sees nothing of the other samples, under the conventions trainers use."""

from __future__ import annotations

import torch

from onboard.checks.base import Check, FixAvailability
from onboard.harness.data import PackedRow, pack
from onboard.harness.forward import PackedBatch, Perturbation, split_losses
from onboard.harness.result import Status, bar_figure
from onboard.patches import ids

ROW_SAMPLES = 3  # samples in the judged row: two earlier ones for the last to see

# name -> (forward kwargs builder, failure mode when this convention leaks)
CONVENTIONS = {
    "no_mask_default_cache": (lambda ids: {}, "FM-PACK-CACHE"),
    "ones_mask_no_cache": (lambda ids: {"attention_mask": torch.ones_like(ids), "use_cache": False}, "FM-PACK-MASK"),
    "no_mask_no_cache": (lambda ids: {"use_cache": False}, "FM-PACK-ISOLATION"),
}


class PackingCheck(Check):
    """What it does:
    Packs the first samples of the data (at most 3, within --pack-length) into a row (position_ids restart
    at 0 for each sample) and asks, under each of three
    conventions trainers feed packed rows with (no attention mask and the model's default use_cache, as
    DataCollatorWithFlattening; an all-ones attention mask; no mask with use_cache=False), whether a
    sample can see the samples before it. The verdict is a perturbation test: the tokens of the first
    sample of the row are replaced and the row is run again; the log-probabilities of every other sample
    must not move. A healthy model gives exactly 0 (masked keys contribute exact zeros), so the
    tolerance is tiny (1e-5 nats in fp32, 1e-3 in bf16/fp16) and needs no noise model. A control run puts
    the row twice in one batch and changes the first copy's first sample: rows never attend to each other, so what moves in the
    second copy is numerical coupling inside the batch (e.g. MoE kernels), and the tolerance is at least 4
    times it. The control runs once per check, under the first convention whose leak is above the floor
    (coupling inside a batch is the model's kernels', not a mask's). The loss of each sample packed against alone is kept as the measure of harm.
    A convention the model cannot run (e.g. a hybrid cache that cannot take packed rows) is reported as
    not applicable with its error, and the others are still judged.

    Why it matters:
    transformers isolates packed samples only when it finds them from position_ids, which it does only
    with no attention mask and no cache; some models build their mask without position_ids (OPT, XGLM,
    MPT, GPT-OSS), use positions of their own (ALiBi: Bloom), or carry a recurrent state across the row
    (Mamba and linear-attention layers). Then every sample attends to the ones before it: training
    silently learns from the wrong context, and the loss can even look lower.

    Failure modes:
    FM-PACK-CACHE: the default use_cache=True disables packed-sample detection.
    FM-PACK-MASK: an all-ones attention mask disables it.
    FM-PACK-ISOLATION: samples leak even with no mask and no cache.

    Fix:
    packing.no_cache_no_mask (safe) for FM-PACK-CACHE / FM-PACK-MASK: use_cache=False in the config, and
    the mask dropped on packed rows when it only marks right padding. packing.block_mask (safe) for
    FM-PACK-ISOLATION: packed rows get an explicit block-diagonal causal 4D mask (eager and sdpa), which
    isolates models whose attention takes one; it cannot isolate a recurrent state, and the re-check says
    so. Either is verified by re-running all three conventions.
    """

    code = "PACK001"
    name = "packing"
    summary = "a packed sample's outputs do not move when another sample of its row changes"
    requires = ("LORA001",)
    fix_availability = FixAvailability.SOMETIMES
    needs_labels = True

    def figures(self, result, device):
        return packing_figures(result)

    def run(self, session):
        # one row of a few samples is enough: a leak shows in any row that holds two, and a forward costs what
        # its tokens do (the first full row of the data, 7 samples, took three times as long to judge the same)
        rows = [r for r in pack(session.examples, session.pack_length) if len(set(r.sample)) > 1][:1]
        if not rows:
            return self.result(Status.SKIP, f"no two samples fit in one row of {session.pack_length} tokens")
        rows = [first_samples(rows[0], session.examples, ROW_SAMPLES)]
        reference = session.reference_losses(sorted(set(rows[0].sample)))
        model = session.train_model
        floor = session.threshold("packing.tolerance")
        factor = session.threshold("packing.control_factor")
        res = self.result(Status.PASS, "")
        res.measure("packed_samples", len(set(rows[0].sample)), "samples", f"in one row of up to {session.pack_length} tokens")
        batch = PackedBatch.from_rows(rows, session.device, session.pad_id)
        vocab = sorted({t for ex in session.examples for t in ex.input_ids})
        leaking, not_applicable, harm = [], {}, {}
        shared: tuple[str, float] | None = None  # the control, run once: batch coupling is the model's, not a mask's
        for name, (kwargs_for, mode) in CONVENTIONS.items():
            try:
                probe = Perturbation(model, batch, vocab, session.seed, kwargs_for)
                leak = probe.leak()
                # the control only judges a move: an exact 0 needs no estimate of the noise
                if leak > floor and shared is None:
                    shared = (name, probe.control())
                control = shared[1] if leak > floor else 0.0
            except Exception as exc:  # noqa: BLE001 - a convention the model cannot run is reported, not fatal
                text = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
                not_applicable[name] = text
                res.measure(f"leak_{name}", "not applicable", "", text)
                continue
            packed = split_losses(probe.logits, batch)
            tol = max(floor, factor * control)
            diffs = {s: (p.mean() - reference[s].mean()).item() for s, p in packed.items() if p.numel()}
            res.measure(f"leak_{name}", float(f"{leak:.3g}"), "nats", compare="<=", limit=tol)
            res.measure(f"control_{name}", float(f"{control:.3g}"), "nats",
                        "the row again in the batch, the first copy changed: 0 without batch coupling (run once, "
                        f"when a leak is above the floor{', under ' + shared[0] if shared and leak > floor else ''})")
            res.measure(f"loss_shift_{name}", float(f"{max(map(abs, diffs.values())):.3g}"), "nats",
                        "largest |packed - alone| of a sample's mean loss")
            harm[name] = {str(s): round(d, 5) for s, d in sorted(diffs.items())}
            if leak > tol:
                leaking.append((name, mode))
        res.evidence["per_sample_diff"] = harm
        res.evidence["per_sample_unpacked_loss"] = {str(i): round(r.mean().item(), 4) if r.numel() else None
                                                    for i, r in reference.items()}
        if not_applicable:
            res.evidence["not_applicable"] = not_applicable
        judged = [n for n in CONVENTIONS if n not in not_applicable]
        masked = ids.PACKING_BLOCK_MASK in session.applied
        if not judged:
            res.status = Status.ERROR
            first = next(iter(not_applicable.values()))
            res.message = (f"the model cannot take an explicit 4D block mask: {first}" if masked else
                           "no convention could run a packed row: " + "; ".join(f"{k}: {v}" for k, v in not_applicable.items()))
            return res
        skipped = f"; not applicable: {', '.join(not_applicable)} ({next(iter(not_applicable.values()))})" if not_applicable else ""
        if not leaking:
            res.message = (f"{res.measurements['packed_samples'].value} packed samples see nothing of each other "
                           f"under {', '.join(judged)}{skipped}")
            return res
        names = [n for n, _ in leaking]
        res.status = Status.FAIL
        if "no_mask_no_cache" in names:
            res.diagnosis, res.proposed_patch = "FM-PACK-ISOLATION", ids.PACKING_BLOCK_MASK
            leak = res.measurements["leak_no_mask_no_cache"].value
            res.message = (f"samples see each other even with no mask and use_cache=False "
                           f"(log-probs move by {leak:.3g} nats){skipped}")
            if masked:
                res.message = (f"samples still see each other under an explicit block-diagonal mask (log-probs move "
                               f"by {leak:.3g} nats): the leak is not in the attention mask; a recurrent or "
                               f"linear-attention state, or positions of the model's own, cross the row{skipped}")
            return res
        res.diagnosis = leaking[0][1]
        res.proposed_patch = ids.PACKING_NO_CACHE
        res.message = ("cross-sample attention with " + " and ".join(names) + " ("
                       + ", ".join(m for _, m in leaking) + f"){skipped}")
        return res


def first_samples(row: PackedRow, examples, n: int) -> PackedRow:
    """The row cut after its first n samples (samples are whole: a row holds each from its first token)."""
    short = PackedRow()
    for index in sorted(set(row.sample))[:n]:
        short.add(index, examples[index])
    return short


PACK_SERIES = {  # evidence key -> legend, colour
    "alone": ("alone", "#0969da"),
    "no_mask_default_cache": ("packed, default cache", "#fb8f44"),
    "ones_mask_no_cache": ("packed, all-ones mask", "#bf3989"),
    "no_mask_no_cache": ("packed, no mask, no cache", "#6e7781"),
}


def packing_figures(result) -> list[dict]:
    """Each sample's loss alone and in its packed row, per convention; then the gap (the harm a leak does)."""
    if "per_sample_diff" not in result.evidence:
        return []
    alone = result.evidence.get("per_sample_unpacked_loss", {})
    diffs: dict[str, dict[str, float]] = result.evidence["per_sample_diff"]
    samples = sorted({int(s) for d in diffs.values() for s in d})
    if not samples or not alone:
        return []
    series = {PACK_SERIES["alone"][0]: [alone.get(str(s)) for s in samples]}
    gaps = {}
    for conv, per in diffs.items():
        legend = PACK_SERIES.get(conv, (conv, "#6e7781"))[0]
        series[legend] = [alone[str(s)] + per[str(s)] if str(s) in per and alone.get(str(s)) is not None else None
                          for s in samples]
        gaps[legend] = [abs(per[str(s)]) if str(s) in per else None for s in samples]
    colors = {legend: color for legend, color in PACK_SERIES.values()}
    labels = [str(s) for s in samples]
    return [bar_figure("PACK001: per-sample loss, alone vs packed (sample index)", labels, series, "nats",
                       colors=colors),
            bar_figure("PACK001: |packed − alone| per sample (the harm a leak does)", labels, gaps, "nats",
                       colors=colors)]

