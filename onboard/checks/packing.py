"""PACK001: a sample in a packed row sees nothing of the other samples, under the conventions trainers use."""

from __future__ import annotations

from typing import TYPE_CHECKING

import re
from contextlib import contextmanager

import torch

from onboard.checks.base import Check, FixAvailability
from onboard.harness.data import IGNORE, Example, PackedRow, attention_span, long_example, pack
from onboard.harness.forward import (PackedBatch, Perturbation, batch_tensors, example_losses, replaced, split_losses,
                                     token_losses)
from onboard.harness.result import Status, bar_figure
from onboard.patches import ids, unwrap
from onboard.patches.packing import UNPACKED_BATCH, unpacked_cost

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession

ROW_SAMPLES = 3  # samples in the judged row: two earlier ones for the last to see
FIRST, TARGET = 10**9, 10**9 + 1  # the far-end row's first and last samples (its others are not measured: < 0)

# name -> (forward kwargs builder, failure mode when this convention leaks)
# a loop of your own (--trainer custom): the model's default cache, or an all-ones mask, may reach the forward
CUSTOM_CONVENTIONS = {
    "no_mask_default_cache": (lambda ids: {}, "FM-PACK-CACHE"),
    "ones_mask_no_cache": (lambda ids: {"attention_mask": torch.ones_like(ids), "use_cache": False}, "FM-PACK-MASK"),
    "no_mask_no_cache": (lambda ids: {"use_cache": False}, "FM-PACK-ISOLATION"),
}
# the HF Trainer (and TRL, axolotl, onboard train): it sets config.use_cache from TrainingArguments.use_cache (False)
# on the model it trains, and the packing collator sends position_ids and no mask
TRAINER_CONVENTIONS = {
    "trainer_no_mask": (lambda ids: {}, "FM-PACK-CACHE"),
    "no_mask_no_cache": (lambda ids: {"use_cache": False}, "FM-PACK-ISOLATION"),
}
CONVENTIONS = {**CUSTOM_CONVENTIONS, **TRAINER_CONVENTIONS}
MISSING_KERNEL = re.compile(r"can't keep packed sequences apart without `([^`]+)`")


def conventions(trainer: str) -> dict:
    return CUSTOM_CONVENTIONS if trainer == "custom" else TRAINER_CONVENTIONS


@contextmanager
def trainer_config(model, trainer: str):
    """The model's config as the trainer leaves it: the HF Trainer sets `model.config.use_cache` to
    TrainingArguments.use_cache (False) when it is built; a loop of one's own leaves it as loaded."""
    config = unwrap(model).config
    if trainer == "custom":
        yield
        return
    old = config.use_cache if "use_cache" in config.__dict__ else None
    config.use_cache = False
    try:
        yield
    finally:
        if old is None:
            config.__dict__.pop("use_cache", None)
        else:
            config.use_cache = old


class PackingCheck(Check):
    """What it does:
    Packs the first samples of the data (at most 3, within --pack-length) into a row (position_ids restart
    at 0 for each sample) and asks, under the conventions the training setup feeds packed rows with, whether a
    sample can see the samples before it, and whether each sample trains as it does alone.
    The conventions are the trainer's (--trainer): with the HF Trainer (hf, the default: also TRL, axolotl and
    onboard train) the model runs with config.use_cache=False, as the Trainer sets it, with no attention mask,
    and again with use_cache=False passed explicitly; with a loop of one's own (custom) the model's default
    use_cache, an all-ones attention mask, and no mask with use_cache=False.
    Isolation is a perturbation test: the tokens of the first sample of the row are replaced and the row is
    run again; the log-probabilities of every other sample must not move. A healthy model gives exactly 0
    (masked keys contribute exact zeros), so the tolerance is tiny (1e-5 nats in fp32, 1e-3 in bf16/fp16). A
    control run puts the row twice in one batch and changes the first copy's first sample: rows never attend to
    each other, so what moves in the second copy is numerical coupling inside the batch (e.g. MoE kernels), and
    the tolerance is at least 4 times it.
    Harm: every later sample's per-token loss packed against the sample alone. The first sample of the row
    sees no other sample under a causal model, so its own difference is the noise floor of running a longer
    row (0 to rounding); a later sample may differ by at most 4 times that, and at least packing.harm_tolerance
    (1e-3 nats in fp32, 5e-2 in bf16/fp16: a sample at another offset of a longer row rounds otherwise). A
    row whose samples are isolated but whose later samples still train otherwise is positioned otherwise:
    absolute positions counted over the row (FM-PACK-POSITIONS).
    Samples longer than the model's windows: where the model declares a sliding window or an attention chunk
    and no later sample of the row is longer, a sample of the data's chats one after another, 32 tokens longer
    than it, joins the row. Far end: the row's last sample again at the far end of the longest row training
    builds (--row-tokens; default what onboard train's 8-sample micro-batch makes of the data's longest
    samples), after other samples of the data, its token losses against alone; 4 times the larger of its shift
    near the row's start and the long row's first sample's shift is the floor. A model that computes from the
    row index instead of position_ids (Llama 4's attention temperature past 8,192 tokens) is FM-PACK-ROWINDEX.
    Under packing.unpacked (the fallback) the same two measures are taken on a right-padded batch of the same
    samples: another row changed must move nothing, and each sample's loss must equal its loss alone (the
    unpadded longest row gives the floor); the padding this costs on the data (micro-batches of 8 samples in
    data order) is the fallback's cost.
    A convention the model cannot run (a hybrid cache) is reported not applicable, never a crash; a
    boundary input a torch fallback refuses names the kernel package it needs.

    Why it matters:
    transformers isolates packed samples only when it finds them from position_ids, which it does only
    with no attention mask and no cache; some models build their mask without position_ids (OPT, XGLM,
    MPT, GPT-OSS), use positions of their own (learned or sinusoidal absolute positions over the row: the Bart
    family, BioGPT), or carry a recurrent or convolution state across the row (Mamba, GatedDeltaNet, LFM2
    and other hybrid layers, which take sample boundaries only as seq_idx / cu_seq_lens and only with their
    CUDA kernels). Then samples train on the wrong context, and the loss can even look lower.

    Failure modes:
    FM-PACK-CACHE: use_cache=True (the model's default, outside the HF Trainer) disables packed-sample detection.
    FM-PACK-MASK: an all-ones attention mask disables it (a loop of one's own).
    FM-PACK-ISOLATION: samples leak even with no mask and no cache.
    FM-PACK-POSITIONS: samples are isolated but a later sample's loss differs from its loss alone: its
    positions run over the row, not from its own start, or (under the block mask) the mask replaced a sliding
    window the model builds itself.
    FM-PACK-ROWINDEX: isolated and exact near the row's start, but a sample at the far end of the longest row
    trains otherwise than alone: the model computes from the row index (Llama 4 past 8,192 tokens); or the
    row's first sample, which sees no other, moves against itself alone beyond rounding (packing.row_noise:
    1e-3 nats in fp32; not judged in bf16/fp16): the model's outputs depend on the row. Where that sample alone
    already moves when given position_ids from 0, the model numbers positions its own way: FM-PACK-POSITIONS
    (Kosmos-2.5, offset by its padding index).

    Fix:
    packing.no_cache_no_mask (safe) for FM-PACK-CACHE / FM-PACK-MASK. For FM-PACK-ISOLATION,
    packing.block_mask (an explicit block-diagonal causal 4D mask, eager and sdpa; one per layer type,
    sliding and chunked layers windowed within each sample as when it runs alone), then
    packing.sample_boundaries (seq_idx and cu_seq_lens_q/k from the collator, as TRL's padding-free collator
    sends them: hybrid layers keep samples apart with their CUDA kernels; a torch fallback refuses them and
    the finding names the package), then packing.segment_conv (short causal convolutions stopped at sample
    starts, in torch: RecurrentGemma). Each is verified by re-running the check: no leak and no harm.
    When none verifies, or for FM-PACK-POSITIONS and FM-PACK-ROWINDEX: packing.unpacked, training on right-padded micro-batches,
    verified by the same two measures on a padded batch, its padding cost stated. The model then trains
    correctly, slower (READY_WITH_FIXES).

    Positions: each packed sample is numbered from where the model numbers a sample it runs alone, measured
    (ModelSession.position_start: the start whose position_ids reproduce the sample alone exactly; padding_idx + 1
    for RoBERTa-style embeddings), and the packing collator is built with that position_ids_start. An
    encoder-decoder (seq2seq) is not packed: its right-padded batch is judged as packing.unpacked's is, and the
    check enables packing.unpacked for training.
    """

    code = "PACK001"
    runs_on = "slice"
    version = 2  # 2: seq2seq trains right-padded, judged as packing.unpacked is
    name = "packing"
    summary = "a packed sample's outputs do not move when another sample of its row changes, and train as alone"
    requires = ("LORA001",)
    fix_availability = FixAvailability.SOMETIMES
    needs_labels = True

    def figures(self, result, device):
        return packing_figures(result)

    def run(self, session: ModelSession):
        if session.seq2seq:  # an encoder-decoder: no packing collator for its rows; it trains right-padded
            return self._seq2seq(session)
        # one row of a few samples is enough: a leak shows in any row that holds two, and a forward costs what
        # its tokens do (the first full row of the data, 7 samples, took three times as long to judge the same)
        rows = [r for r in pack(session.examples, session.pack_length, session.position_start)
                if len(set(r.sample)) > 1][:1]
        if not rows:
            return self.result(Status.SKIP, f"no two samples fit in one row of {session.pack_length} tokens")
        row = first_samples(rows[0], session.examples, ROW_SAMPLES)
        if ids.PACKING_UNPACKED in session.applied:
            return self._unpacked(session, sorted(set(row.sample)))
        model = session.train_model
        # a later sample longer than every window and chunk the model declares: a mask that loses a window shows
        extra = {}
        span = attention_span(unwrap(model).config, session.max_length)
        if span and all(len(session.examples[s]) <= span for s in sorted(set(row.sample))[1:]):
            extra[len(session.examples)] = long_example(session.examples, min(span + 32, session.max_length))
            row.add(len(session.examples), extra[len(session.examples)])
        rows = [row]
        reference = session.reference_losses(sorted(set(rows[0].sample) - set(extra)))
        reference.update({i: example_losses(model, ex, session.device) for i, ex in extra.items()})
        trainer = session.setup.trainer
        floor = session.threshold("packing.tolerance")
        factor = session.threshold("packing.control_factor")
        res = self.result(Status.PASS, "", fallback_patch=ids.PACKING_UNPACKED)
        res.measure("packed_samples", len(set(rows[0].sample)), "samples", f"in one row of up to {session.pack_length} tokens"
                    + (f" and one of {len(next(iter(extra.values())))}, longer than the model's window or chunk ({span})"
                       if extra else ""))
        res.measure("trainer", trainer, "", "whose conventions are judged (--trainer)")
        res.measure("position_start", session.position_start, "", "measured: the first position of a sample run "
                    "alone (RoBERTa-style: padding_idx + 1); packed rows and the collator's position_ids_start follow it")
        batch = PackedBatch.from_rows(rows, session.device, session.pad_id)
        vocab = sorted({t for ex in session.examples for t in ex.input_ids})
        first = int(batch.sample[0, 0])
        leaking, not_applicable, harm, harmful, missing = [], {}, {}, [], []
        probe_logits: dict[str, torch.Tensor] = {}
        row_length: dict[str, float] = {}  # convention -> the first sample's shift, where it is not rounding
        shared: tuple[str, float] | None = None  # the control, run once: batch coupling is the model's, not a mask's
        for name, (kwargs_for, mode) in conventions(trainer).items():
            if name == "no_mask_no_cache" and trainer != "custom" and "leak_trainer_no_mask" in res.measurements \
                    and not leaking and not harmful:  # the Trainer's own run was clean: use_cache=False adds nothing
                continue
            try:
                with trainer_config(model, trainer if name == "trainer_no_mask" else "custom"):
                    probe = Perturbation(model, batch, vocab, session.seed, kwargs_for)
                    leak = probe.leak()
                    # the control only judges a move: an exact 0 needs no estimate of the noise
                    if leak > floor and shared is None:
                        shared = (name, probe.control())
                control = shared[1] if leak > floor else 0.0
            except Exception as exc:  # noqa: BLE001 - a convention the model cannot run is reported, not fatal
                text = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
                missing += [m for m in MISSING_KERNEL.findall(str(exc)) if m not in missing]
                not_applicable[name] = text
                res.measure(f"leak_{name}", "not applicable", "", text)
                continue
            packed = split_losses(probe.logits, batch)
            probe_logits[name] = probe.logits
            tol = max(floor, factor * control)
            diffs = {s: (p.mean() - reference[s].mean()).item() for s, p in packed.items() if p.numel()}
            res.measure(f"leak_{name}", float(f"{leak:.3g}"), "nats", compare="<=", limit=tol)
            res.measure(f"control_{name}", float(f"{control:.3g}"), "nats",
                        "the row again in the batch, the first copy changed: 0 without batch coupling (run once, "
                        f"when a leak is above the floor{', under ' + shared[0] if shared and leak > floor else ''})")
            res.measure(f"loss_shift_{name}", float(f"{max(map(abs, diffs.values())):.3g}"), "nats",
                        "largest |packed - alone| of a sample's mean loss")
            noise, worst = token_shifts(packed, reference, first)
            harm_floor = max(tol, factor * noise, session.threshold("packing.harm_tolerance"))
            res.measure(f"harm_{name}", float(f"{worst:.3g}"), "nats", compare="<=", limit=harm_floor,
                        note=f"(largest |packed - alone| of a later sample's token loss; the first sample's, "
                             f"{noise:.2g}, is the floor of running the longer row)")
            harm[name] = {str(s): round(d, 5) for s, d in sorted(diffs.items())}
            if leak > tol:
                leaking.append((name, mode))
            elif worst > harm_floor:
                harmful.append(name)
            elif noise > session.threshold("packing.row_noise"):  # beyond rounding: the row's length itself
                row_length[name] = noise
        clean = [n for n in conventions(trainer) if f"harm_{n}" in res.measurements and n not in harmful
                 and n not in {m for m, _ in leaking} and n not in row_length]
        far = None
        if clean and not leaking and not harmful:
            last = max(set(rows[0].sample))
            example = extra.get(last) or session.examples[last]
            near = token_shift(split_losses(probe_logits[clean[0]], batch)[last], reference[last])
            far = self._far_end(session, model, trainer, clean[0], example, reference[last], near, res)
        res.evidence["per_sample_diff"] = harm
        res.evidence["per_sample_unpacked_loss"] = {str(i): round(r.mean().item(), 4) if r.numel() else None
                                                    for i, r in reference.items()}
        if not_applicable:
            res.evidence["not_applicable"] = not_applicable
        judged = [n for n in conventions(trainer) if n not in not_applicable and f"leak_{n}" in res.measurements]
        masked = ids.PACKING_BLOCK_MASK in session.applied
        if missing:  # the boundaries reached a torch fallback that refuses them: a kernel package is missing
            missing += [m for m in _more_missing_kernels(model, batch) if m not in missing]
            res.evidence["missing_kernels"] = missing
            res.status, res.diagnosis = Status.FAIL, "FM-PACK-ISOLATION"
            res.message = (f"the model's layers keep packed samples apart only with {', '.join(missing)} (CUDA "
                           f"kernels), not installed here: its torch fallback refuses sample boundaries "
                           f"({next(iter(not_applicable.values()))})")
            return res
        if not judged:
            res.status = Status.ERROR
            first_error = next(iter(not_applicable.values()))
            res.message = (f"the model cannot take an explicit 4D block mask: {first_error}" if masked else
                           "no convention could run a packed row: " + "; ".join(f"{k}: {v}" for k, v in not_applicable.items()))
            return res
        skipped = f"; not applicable: {', '.join(not_applicable)} ({next(iter(not_applicable.values()))})" if not_applicable else ""
        if far is None and row_length and not leaking and not harmful:
            name, shift = next(iter(row_length.items()))
            numbered = _own_numbering_shift(session, model, first)
            res.measure("own_positions_shift", float(f"{numbered:.3g}"), "nats",
                        "the first sample alone, position_ids 0..n-1 given (as the collator sends) vs not given")
            if numbered > session.threshold("packing.row_noise"):
                res.status, res.diagnosis = Status.FAIL, "FM-PACK-POSITIONS"
                res.message = (f"packed samples see nothing of each other, yet the row's first sample trains otherwise "
                               f"than alone (a token loss {shift:.3g} nats off under {name}): the model numbers "
                               f"positions its own way, and position_ids from 0, as the packing collator sends them, "
                               f"move even a sample alone by {numbered:.3g} nats (positions offset by a padding index, "
                               "as RoBERTa's)")
                return res
            far = (f"packed samples see nothing of each other, yet the row's first sample, which sees no other, trains "
                   f"otherwise than alone (a token loss {shift:.3g} nats off under {name}, beyond rounding): the "
                   "model's outputs depend on the row it runs in, not only on the sample")
        if far is not None:
            res.status, res.diagnosis = Status.FAIL, "FM-PACK-ROWINDEX"
            res.message = far
            return res
        if not leaking and not harmful:
            res.message = (f"{res.measurements['packed_samples'].value} packed samples see nothing of each other "
                           f"and train as alone under {', '.join(judged)}{skipped}"
                           + (f", also at the far end of a {session.longest_row}-token row"
                              if "far_end_shift" in res.measurements else ""))
            return res
        res.status = Status.FAIL
        names = [n for n, _ in leaking]
        if not leaking:
            worst = max(res.measurements[f"harm_{n}"].value for n in harmful)
            res.diagnosis = "FM-PACK-POSITIONS"
            how = ("the block mask replaced the model's own mask, so a sliding window it builds is gone, or its "
                   "positions run over the row" if masked else
                   "its positions run over the row, not from its own start (position_ids are not what the model "
                   "positions by)")
            res.message = (f"packed samples see nothing of each other, yet a later sample's token loss differs from "
                           f"its loss alone by {worst:.3g} nats: {how}{skipped}")
            return res
        if "no_mask_no_cache" in names:
            res.diagnosis, res.proposed_patch = "FM-PACK-ISOLATION", ids.PACKING_BLOCK_MASK
            res.alternatives = [ids.PACKING_SAMPLE_BOUNDARIES, ids.PACKING_SEGMENT_CONV]
            leak = res.measurements["leak_no_mask_no_cache"].value
            res.message = (f"samples see each other even with no mask and use_cache=False "
                           f"(log-probs move by {leak:.3g} nats){skipped}")
            tried = {ids.PACKING_BLOCK_MASK: "an explicit block-diagonal mask",
                     ids.PACKING_SAMPLE_BOUNDARIES: "sample boundaries (seq_idx, cu_seq_lens)",
                     ids.PACKING_SEGMENT_CONV: "the short convolutions stopped at sample starts"}
            if any(p in session.applied for p in tried):
                how = next(text for p, text in tried.items() if p in session.applied)
                res.message = (f"samples still see each other with {how} (log-probs move by {leak:.3g} nats): "
                               f"a recurrent, convolution or linear-attention state, or positions of the model's "
                               f"own, cross the row{skipped}")
            return res
        res.diagnosis = leaking[0][1]
        res.proposed_patch = ids.PACKING_NO_CACHE
        res.message = ("cross-sample attention with " + " and ".join(names) + " ("
                       + ", ".join(m for _, m in leaking) + f"){skipped}")
        return res

    def _far_end(self, session: ModelSession, model, trainer, convention, example, alone, near, res) -> str | None:
        """The last sample of the judged row again, now at the far end of the longest row training builds
        (session.longest_row), after other samples of the data: its token losses against its own alone. A model
        that computes from the row index instead of the sample's positions (Llama 4's attention temperature,
        from arange(row length) past 8,192 tokens) differs there while every probe of a short row is exact.
        The floor: 4 x the larger of the first sample's shift in that long row (the noise of its length) and
        this sample's shift near the row's start. Returns the finding, or None."""
        length = session.longest_row
        room = length - len(example)
        if room < 2:
            return None
        row = PackedRow(start=session.position_start)
        k = 0
        while len(row.input_ids) < room:  # filler: the data's samples in order, the last one cut to fit
            ex = session.examples[k % len(session.examples)]
            left = room - len(row.input_ids)
            part = ex if len(ex) <= left else Example(ex.input_ids[:left], ex.labels[:left], ex.kinds[:left], True)
            row.add(-2 - k if k else FIRST, part)  # only the first filler sample is measured (the others: < 0)
            k += 1
        row.add(TARGET, example)
        batch = PackedBatch.from_rows([row], session.device, session.pad_id)
        kwargs_for = conventions(trainer)[convention][0]
        with torch.no_grad(), trainer_config(model, trainer if convention == "trainer_no_mask" else "custom"):
            logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, **kwargs_for(batch.input_ids)).logits
        packed = split_losses(logits, batch)
        del logits
        # the filler's first sample is the data's first, whole unless the room was shorter than it
        noise = token_shift(packed[FIRST], session.reference_losses([0])[0]) if len(session.examples[0]) <= room else 0.0
        shift = token_shift(packed[TARGET], alone)
        limit = max(session.threshold("packing.tolerance"), session.threshold("packing.control_factor") * max(noise, near))
        res.measure("far_end_row", length, "tokens", "the longest packed row training builds (--row-tokens)")
        res.measure("far_end_shift", float(f"{shift:.3g}"), "nats", compare="<=", limit=limit,
                    note=f"(largest |packed - alone| token loss of a sample at the row's far end; near the start "
                         f"{near:.2g}, the row's first sample {noise:.2g})")
        if shift <= limit:
            return None
        return (f"packed samples see nothing of each other, yet a sample at the far end of a {length}-token row "
                f"trains otherwise than alone (a token loss {shift:.3g} nats off, {near:.2g} near the row's start): "
                "the model computes from the row index, not the sample's positions (e.g. Llama 4's attention "
                "temperature); rows this long train wrong")

    def _seq2seq(self, session: ModelSession):
        """An encoder-decoder's samples train right-padded (transformers packs decoder-only rows only: its
        flattening collator and packed-sequence detection read one sequence's position_ids): the padded batch is
        judged as packing.unpacked's is, and the setup trains that way."""
        from onboard.patches import get_patch

        samples = sorted(range(len(session.examples)), key=lambda i: len(session.examples[i]))[:ROW_SAMPLES]
        session.apply_patch(get_patch(ids.PACKING_UNPACKED))
        res = self._unpacked(session, sorted(samples))
        if res.status is Status.PASS:
            res.enables = ids.PACKING_UNPACKED
            res.message = f"seq2seq, trained right-padded: {res.message}"
        return res

    def _unpacked(self, session: ModelSession, samples: list[int]):
        """Under packing.unpacked: the samples as one right-padded batch. Another row changed must move nothing,
        and each sample's token losses must equal its own alone (the longest row, unpadded, gives the floor)."""
        examples = [session.examples[i] for i in samples]
        reference = session.reference_losses(samples)
        floor = session.threshold("packing.tolerance")
        factor = session.threshold("packing.control_factor")
        batch = batch_tensors(examples, session.device, session.pad_id)
        vocab = sorted({t for ex in session.examples for t in ex.input_ids})
        res = self.result(Status.PASS, "")
        res.measure("padded_samples", len(samples), "samples", "right-padded in one batch")
        seq2seq = session.seq2seq  # the decoder's logits follow the labels: they go in, and change with the row
        pool, gen = torch.tensor(vocab, dtype=torch.long), torch.Generator().manual_seed(session.seed + 1)
        with torch.no_grad():
            logits = session.train_model(**{k: v for k, v in batch.items() if k != "labels" or seq2seq},
                                         use_cache=False).logits
            first = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
            first[0] = batch["attention_mask"][0].bool()  # every real token of the first row changes
            changed = {"input_ids": replaced(batch["input_ids"], first, pool, gen),
                       "attention_mask": batch["attention_mask"]}
            if seq2seq:  # and its labels: the decoder's input
                labelled = torch.zeros_like(batch["labels"], dtype=torch.bool)
                labelled[0] = batch["labels"][0] != IGNORE
                changed["labels"] = torch.where(labelled, replaced(batch["labels"].clamp(min=0), labelled, pool, gen),
                                                batch["labels"])
            other = session.train_model(**changed, use_cache=False).logits
        real = (batch["labels"][1:] != IGNORE) if seq2seq else batch["attention_mask"][1:].bool()
        move = ((logits[1:].float().log_softmax(-1) - other[1:].float().log_softmax(-1)).abs().amax(-1)[real].max().item()
                if real.any() else 0.0)
        losses = token_losses(logits, batch["labels"], seq2seq=seq2seq).cpu()
        trained = batch["labels"].cpu() != IGNORE
        shifts = {index: token_shift(losses[row][trained[row]], reference[index]) for row, index in enumerate(samples)}
        longest = max(range(len(samples)), key=lambda r: len(examples[r]))
        noise = shifts[samples[longest]]
        harm_floor = max(floor, factor * noise, session.threshold("packing.harm_tolerance"))
        worst = max(shifts.values())
        res.measure("leak_padded", float(f"{move:.3g}"), "nats", compare="<=", limit=floor,
                    note="(another row changed: log-probs of the others)")
        res.measure("harm_padded", float(f"{worst:.3g}"), "nats", compare="<=", limit=harm_floor,
                    note=f"(largest |padded - alone| of a token loss; the unpadded longest row's, {noise:.2g}, is the floor)")
        padding, cost = unpacked_cost([len(ex) for ex in session.examples])
        res.measure("padding_fraction", round(padding, 4), "of tokens",
                    f"right-padded micro-batches of {UNPACKED_BATCH} samples in data order, on this data")
        res.evidence["per_sample_diff"] = {"padded": {str(i): round(float(
            (losses[r][trained[r]].mean() - reference[i].mean()) if reference[i].numel() else 0.0), 5)
            for r, i in enumerate(samples)}}
        res.evidence["per_sample_unpacked_loss"] = {str(i): round(reference[i].mean().item(), 4)
                                                    if reference[i].numel() else None for i in samples}
        res.evidence["fallback_cost"] = cost
        if move > floor or worst > harm_floor:
            res.status, res.diagnosis = Status.FAIL, "FM-PACK-ISOLATION"
            res.message = (f"even right-padded, samples do not train as alone: another row moves log-probs by "
                           f"{move:.3g} nats, a token loss differs from alone by {worst:.3g}")
            return res
        res.message = (f"{len(samples)} samples right-padded in one batch see nothing of each other and train as "
                       f"alone; packing is off: {padding:.0%} of the tokens are padding on this data")
        return res


@torch.no_grad()
def _own_numbering_shift(session: ModelSession, model, index: int) -> float:
    """The largest |difference| of sample `index`'s token losses alone, with position_ids 0..n-1 given (a row of
    one sample from the packing collator) and without (the model numbering its positions itself)."""
    example = session.examples[index]
    start = session.position_start
    given = example_losses(model, example, session.device,
                           position_ids=torch.arange(start, start + len(example), device=session.device)[None])
    return token_shift(given, session.reference_losses([index])[index])


@torch.no_grad()
def _more_missing_kernels(model, batch) -> list[str]:
    """The first refusal names one package; the boundary inputs one at a time name the others (Qwen3.5's short
    convolution needs causal-conv1d for seq_idx, its GatedDeltaNet flash-linear-attention for cu_seq_lens)."""
    from onboard.patches.packing import sample_boundaries

    found = []
    bounds = sample_boundaries(batch.position_ids)
    for keep in (("seq_idx",), ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")):
        try:
            model(input_ids=batch.input_ids[:1], position_ids=batch.position_ids[:1], use_cache=False,
                  **{k: v for k, v in bounds.items() if k in keep})
        except ValueError as exc:
            found += MISSING_KERNEL.findall(str(exc))
        except Exception:  # noqa: BLE001 - only the kernel refusals are looked for
            pass
    return found


def token_shifts(packed: dict[int, torch.Tensor], reference: dict[int, torch.Tensor], first: int) -> tuple[float, float]:
    """(the first sample's largest |packed - alone| token loss, the later samples' largest): the first sees no
    other sample in a causal row, so its shift is the noise of running a longer row."""
    noise = token_shift(packed[first], reference[first]) if first in packed else 0.0
    later = [token_shift(packed[s], reference[s]) for s in packed if s != first]
    return noise, max(later, default=0.0)


def token_shift(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest |a - b| of one sample's token losses, two ways of running it (0 when there are none)."""
    return (a - b).abs().max().item() if a.shape == b.shape and a.numel() else 0.0


def first_samples(row: PackedRow, examples, n: int) -> PackedRow:
    """The row cut after its first n samples (samples are whole: a row holds each from its first token)."""
    short = PackedRow(start=row.start)
    for index in sorted(set(row.sample))[:n]:
        short.add(index, examples[index])
    return short


PACK_SERIES = {  # evidence key -> legend, colour
    "alone": ("alone", "#0969da"),
    "no_mask_default_cache": ("packed, default cache", "#fb8f44"),
    "ones_mask_no_cache": ("packed, all-ones mask", "#bf3989"),
    "no_mask_no_cache": ("packed, no mask, no cache", "#6e7781"),
    "trainer_no_mask": ("packed, as the Trainer runs it", "#fb8f44"),
    "padded": ("right-padded (unpacked)", "#1a7f37"),
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

