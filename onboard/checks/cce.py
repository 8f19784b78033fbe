"""CCE001: Cut Cross Entropy is live on the loaded class, gives the reference loss, and saves memory."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from onboard.checks.base import Check, FixAvailability
from onboard.harness.forward import grad_rel_diff
from onboard.harness.memory import cuda_peak_bytes
from onboard.harness.result import Status, bar_figure, note_figure
from onboard.patches import get_patch, unwrap
from onboard.patches import ids
from onboard.patches.cce import CCE_INSTALL, CCE_REQUIREMENT, cce_missing

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession

MEMORY_SHAPE = (4, 2048)  # batch x sequence of the memory probe on GPU


def predicted_saving(batch: int, seq: int, vocab: int, dtype: torch.dtype) -> int:
    """Bytes the plain loss holds at its peak and the fused loss does not.

    The logits in the model dtype, their fp32 log-softmax kept for backward, and the fp32 gradient of the
    logits: (dtype bytes + 8) per element of batch x sequence x vocab; for bf16 that is 5x the logits.
    """
    return batch * seq * vocab * (torch.finfo(dtype).bits // 8 + 8)


class CceCheck(Check):
    """What it does:
    Applies the cce.fused_loss patch to the model as loaded (LoRA-wrapped), runs one forward and
    backward with labels (the shortest labelled sample), and checks three things. Live: cut_cross_entropy.linear_cross_entropy computed
    the loss from the tensor that really enters the output layer, and no logits were produced. Same loss:
    the fused loss equals the model's own loss on the same batch (relative 1e-4 in fp32, 1e-2 in bf16),
    and so do the adapter gradients. Memory (CUDA only): peak memory of a forward and backward with and without
    the patch at the largest of 4 x 2048, 2 x 2048, 1 x 2048 and 1 x 1024 tokens that fits the card's free memory
    (the report says which, and what ran out), against the predicted saving of (dtype bytes + 8) x batch x
    sequence x vocab. On CPU the torch_compile implementation runs; it materialises logits inside, so
    memory is not measured.
    Ground truth is the model's behaviour: the patch measures the transform between the output layer and
    the logits (scale, softcap) on a probe forward, and when the losses differ the check tells why from
    the model's own logits: its loss is not the shifted cross-entropy of its logits (e.g. it does not
    shift labels), or the fused path misses a transform. An encoder-decoder (seq2seq) runs its decoder on the
    labels' shifted copy its prepare_decoder_input_ids_from_labels builds and the fused loss does not shift
    (its logits at t predict labels[t]); one without that method has only its own loss judged, against the
    unshifted cross-entropy of its decoder's logits.

    Why it matters:
    The logits of a large vocabulary dominate SFT memory. A fused loss patched onto the wrong class
    (XForCausalLM while XForConditionalGeneration was loaded) saves nothing, and one that skips a logit
    transform (softcapping, logit scale) trains on a wrong loss.

    Failure modes:
    FM-CCE-INACTIVE: the fused loss cannot be live: the model computes its logits without calling its
    output layer, or full logits were still produced.
    FM-CCE-MATH: the fused loss differs from the model's own loss: its logits are not a scale or softcap
    of the output layer's output, or its own loss is not the next-token cross-entropy of its logits.
    WARN when the patch cannot apply to this model (training then uses the plain loss) or the memory
    saving is under half the prediction. SKIP, naming the install line, when cut_cross_entropy cannot be
    imported here (it is the `onboard[cce]` extra; on Linux it requires triton): that says nothing about the
    model, and training uses the model's own loss.

    Fix:
    None for the fused loss itself: when this check passes, `onboard train` uses cce.fused_loss on CUDA. When it
    fails, the fallback cce.model_loss: training computes the model's own loss over full logits, verified by
    re-running the check (the model's own loss must be the next-token cross-entropy of its logits), its cost
    the logits' memory at 4 x 2048 tokens. A class whose own loss is the unshifted cross-entropy (position t
    trained on labels[t]: BartForCausalLM, XLM, Marian's and Whisper's decoders, whose documentation asks for
    labels shifted beforehand) gets labels.shift first: each sample's labels shifted before its forward, verified
    by the re-check (the model's loss is then the next-token cross-entropy of its logits, and the fused loss
    matches it; without cut-cross-entropy the model's loss alone is judged). A model whose own loss is neither
    stays NOT_READY.
    """

    code = "CCE001"
    runs_on = "slice"
    name = "cce"
    summary = "Cut Cross Entropy is live on the loaded class, matches the loss, saves memory"
    requires = ("LORA001",)
    needs_labels = True
    fix_availability = FixAvailability.SOMETIMES  # labels.shift, for a model loss of position t on labels[t]
    version = 5  # 5: seq2seq's fallback (cce.model_loss) judged against the unshifted cross-entropy
    # (the memory probe sized to the card came after 5 without a bump: it moves a WARN, never a verdict)
    # 4: seq2seq: the fused loss unshifted on the decoder; else the model's own loss judged
    # 3: seq2seq: the model's own loss against the unshifted cross-entropy of its decoder's logits
    # 2: without cut_cross_entropy the fused loss is SKIP naming the install line (1 crashed), the
    # model's own loss still judged; a memory probe that runs out of GPU memory no longer falls back to the model's
    # own loss (it needs more memory, not less); a model loss of position t on labels[t] gets labels.shift

    def figures(self, result, device):
        ms = result.measurements
        if "peak_plain" in ms and "peak_fused" in ms:
            lines = {}
            if "saving_predicted" in ms:
                lines["plain − predicted saving"] = float(ms["peak_plain"].value) - float(ms["saving_predicted"].value)
            batch = ms["memory_batch"].value if "memory_batch" in ms else ""
            return [bar_figure(f"CCE001: peak memory of a training step {batch}", ["peak"],
                               {"plain loss": [float(ms["peak_plain"].value)], "CCE": [float(ms["peak_fused"].value)]},
                               "GiB", colors={"plain loss": "#fb8f44", "CCE": "#0969da"}, lines=lines)]
        return [note_figure(f"Peak memory with and without CCE is measured on CUDA only; this run was on {device}.")]

    def run(self, session: ModelSession):
        patch = get_patch(ids.CCE_FUSED_LOSS)
        missing = cce_missing()
        model = session.train_model
        if session.seq2seq and (missing or patch.applies_to(model)):  # the model's own loss, judged as seq2seq's
            return self._seq2seq(session, missing or patch.applies_to(model))
        if missing:  # the fused loss cannot be judged here; the loss training then uses, the model's own, can
            return self._without_library(session, missing)
        reason = patch.applies_to(model)
        if reason:
            return self.result(Status.WARN, f"fused loss not available: {reason}; training uses the plain loss",
                               diagnosis="FM-CCE-INACTIVE")
        batch = session.probe_batch()  # the shortest labelled sample: the math needs no length, and it is cheap
        ref_loss, ref_grads, own = _loss_and_grads(model, batch)
        cls = type(unwrap(model)).__name__
        if ids.CCE_MODEL_LOSS in session.applied:
            return self._model_loss(session, ref_loss, own, cls)
        res = self.result(Status.PASS, "", enables=patch.id, fallback_patch=ids.CCE_MODEL_LOSS)
        res.measure("loss_reference", round(ref_loss, 6), "nats", "the model's own loss")
        res.measure("ce_of_logits_shifted", round(own["shifted"], 6), "nats", "cross-entropy of its logits, next token")
        try:  # through the session, taken back below: the check measures it, training decides
            handle = session.apply_patch(patch)
        except ValueError as exc:
            text = str(exc).splitlines()[0]
            res.status, res.enables = Status.FAIL, None
            if "ran 0 times" in text:
                res.diagnosis = "FM-CCE-INACTIVE"
                res.message = f"the fused loss cannot be live on {cls}: {text}"
            else:
                res.diagnosis = "FM-CCE-MATH"
                res.message = f"the fused loss cannot reproduce {cls}'s logits: {text}"
            return res
        try:
            fused_loss, fused_grads, fused = _loss_and_grads(model, batch)
        except (IndexError, RuntimeError) as exc:  # the model post-processes logits the fused path never makes
            res.status, res.enables, res.diagnosis = Status.FAIL, None, "FM-CCE-MATH"
            res.message = (f"the fused loss cannot run on {cls}: its forward works on the logits after the output "
                           f"layer ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}), which the fused loss "
                           "never makes")
            return res
        finally:
            session.revert_patch(patch.id)
        stats = handle.stats
        rtol = session.threshold("cce.loss_rtol")
        rel = abs(fused_loss - ref_loss) / max(abs(ref_loss), 1e-12)
        grad_rel = grad_rel_diff(ref_grads, fused_grads)
        res.measure("impl", stats.impl)
        res.measure("logit_scale", float(f"{stats.scale:.6g}"), "", "measured: logits / output layer")
        res.measure("logit_softcap", stats.softcap if stats.softcap is not None else "none", "", "measured fit")
        res.measure("fused_loss_calls", stats.calls, "calls", compare=">=", limit=1)
        res.measure("logits_produced", fused["logits"], "elements", f"0 (plain loss: {own['logits']})")
        res.measure("loss_fused", round(fused_loss, 6), "nats")
        res.measure("loss_rel_diff", float(f"{rel:.3g}"), "", compare="<=", limit=rtol)
        res.measure("grad_rel_diff", float(f"{grad_rel:.3g}"), "", compare="<=", limit=rtol * 10)
        if stats.calls == 0 or fused["logits"] > 0:
            res.status, res.diagnosis, res.enables = Status.FAIL, "FM-CCE-INACTIVE", None
            res.message = f"the fused loss is not live on {cls}: {stats.calls} fused calls, {fused['logits']} logits produced"
            return res
        if rel > rtol or grad_rel > rtol * 10:
            res.status, res.diagnosis, res.enables = Status.FAIL, "FM-CCE-MATH", None
            res.message = (f"fused loss {fused_loss:.5f} vs the model's {ref_loss:.5f} (rel {rel:.2g}), gradients rel "
                           f"{grad_rel:.2g}: " + _why(ref_loss, own, rtol))
            if _unshifted(ref_loss, own, rtol) and not session.seq2seq:  # position t trained on token t: shift first
                res.proposed_patch = ids.LABELS_SHIFT
            return res
        res.message = f"live on {cls} ({stats.impl}), loss matches to {rel:.1g}"
        if session.device.type != "cuda":
            res.measure("memory", "skipped", "", "CUDA only")
            res.message += "; memory not measured on CPU (torch_compile materialises logits)"
            return res
        with session.placed("whole"):  # memory is the whole model's: its peak, whether the probe fits the card
            _measure_memory(res, session, patch, session.train_model)
        return res


    def _without_library(self, session: ModelSession, missing: str):
        """No cut_cross_entropy here: the fused loss is not judged (SKIP, with the line that installs it), but the
        loss training uses instead, the model's own, still is: a class whose own loss is not the next-token
        cross-entropy of its logits (BartForCausalLM trains position t on token t) is the same finding with or
        without the library, and a library the machine lacks must not hide it."""
        model = session.train_model
        ref_loss, _, own = _loss_and_grads(model, session.probe_batch())
        judged = self._model_loss(session, ref_loss, own, type(unwrap(model)).__name__)
        judged.evidence["needs_dependency"] = {"package": CCE_REQUIREMENT, "install": CCE_INSTALL,
                                               "extra": "onboard[cce]", "reason": missing}
        if judged.status is Status.FAIL:
            judged.message += f" (the fused loss is not judged: {missing})"
            if _unshifted(ref_loss, own, session.threshold("cce.loss_rtol")):
                judged.proposed_patch = ids.LABELS_SHIFT
            return judged
        if ids.LABELS_SHIFT in session.applied:  # the re-check of the label fix: the loss training uses is right now
            judged.message = (f"with labels.shift the model's own loss is the next-token cross-entropy of its logits "
                              f"(the fused loss is not judged: {missing})")
            return judged
        judged.status = Status.SKIP
        judged.message = (f"not run: {missing}; training uses the model's own loss, the next-token cross-entropy of "
                          "its logits")
        judged.evidence.pop("fallback_cost", None)
        return judged

    def _seq2seq(self, session: ModelSession, why: str):
        """An encoder-decoder whose fused loss cannot run here (`why`): its decoder's logits at t predict labels[t]
        (the model shifts the labels into the decoder's input), so its own loss, which training then uses, must be
        the unshifted cross-entropy of its logits. Where the fused loss runs, the check judges it as for a causal LM
        (the fused path runs the decoder on the labels' shifted copy and does not shift)."""
        model = session.train_model
        ref_loss, _, own = _loss_and_grads(model, session.probe_batch())
        rtol = session.threshold("cce.loss_rtol")
        rel = abs(own["unshifted"] - ref_loss) / max(abs(ref_loss), 1e-12)
        res = self.result(Status.PASS, "")
        res.measure("loss_reference", round(ref_loss, 6), "nats", "the model's own loss")
        res.measure("ce_of_logits", round(own["unshifted"], 6), "nats", "cross-entropy of the decoder's logits, labels[t] at t")
        res.measure("own_loss_rel_diff", float(f"{rel:.3g}"), "", compare="<=", limit=rtol,
                    note="(the model's own loss vs the cross-entropy of its decoder's logits)")
        cls = type(unwrap(model)).__name__
        if not rel <= rtol:
            res.status, res.diagnosis = Status.FAIL, "FM-CCE-MATH"
            res.message = (f"{cls}'s own loss {ref_loss:.5f} is not the cross-entropy of its decoder's logits "
                           f"({own['unshifted']:.5f}): it adds or reweights terms")
            return res
        res.message = (f"seq2seq: training uses {cls}'s own loss, the cross-entropy of its decoder's logits (to "
                       f"{rel:.1g}); the fused loss is not judged: {why}")
        return res

    def _model_loss(self, session: ModelSession, ref_loss: float, own: dict, cls: str):
        """Under cce.model_loss (the fallback): training computes the model's own loss from full logits. That is
        right when the model's loss is the next-token cross-entropy of the logits it returns; its cost is the
        logits' memory."""
        if session.seq2seq:  # its objective: the decoder's logits at t against labels[t] (seq2seq's own judge)
            res = self._seq2seq(session, "it does not run on this model (cce.model_loss: the model's own loss)")
            batch, seq = MEMORY_SHAPE
            cost = predicted_saving(batch, seq, session.logit_width, session.dtype)
            res.evidence["fallback_cost"] = (f"the model's own loss: full logits, their fp32 log-softmax and gradient, "
                                             f"{cost / 2**30:.2f} GiB at {batch} x {seq} tokens "
                                             f"({session.logit_width} classes)")
            return res
        rtol = session.threshold("cce.loss_rtol")
        res = self.result(Status.PASS, "")
        rel = abs(own["shifted"] - ref_loss) / max(abs(ref_loss), 1e-12)
        res.measure("loss_reference", round(ref_loss, 6), "nats", "the model's own loss")
        res.measure("ce_of_logits_shifted", round(own["shifted"], 6), "nats", "cross-entropy of its logits, next token")
        res.measure("own_loss_rel_diff", float(f"{rel:.3g}"), "", compare="<=", limit=rtol,
                    note="(the model's own loss vs the next-token cross-entropy of its logits)")
        batch, seq = MEMORY_SHAPE
        cost = predicted_saving(batch, seq, session.logit_width, session.dtype)
        res.measure("logits_memory", round(cost / 2**30, 3), "GiB",
                    f"(dtype bytes + 8) x batch x sequence x vocab at {batch} x {seq}, which the fused loss would save")
        res.evidence["fallback_cost"] = (f"the model's own loss: full logits, their fp32 log-softmax and gradient, "
                                         f"{cost / 2**30:.2f} GiB at {batch} x {seq} tokens ({session.logit_width} classes)")
        if not rel <= rtol:
            res.status, res.diagnosis = Status.FAIL, "FM-CCE-MATH"
            res.message = ("the model's own loss is not the next-token cross-entropy of its logits either: "
                           + _why(ref_loss, own, rtol))
            return res
        res.message = (f"training uses {cls}'s own loss, the next-token cross-entropy of its logits (to {rel:.1g}); "
                       f"it costs the logits' memory, {cost / 2**30:.2f} GiB at {batch} x {seq} tokens")
        return res


def _unshifted(ref_loss: float, own: dict, rtol: float) -> bool:
    """The model's own loss is the cross-entropy of position t against labels[t] (and not the next-token one)."""
    def same(a: float) -> bool:
        return abs(a - ref_loss) <= rtol * max(abs(ref_loss), 1e-12)

    return same(own["unshifted"]) and not same(own["shifted"])


def _why(ref_loss: float, own: dict, rtol: float) -> str:
    """Which of the model's own losses its loss is: the answer to a fused-loss mismatch."""
    def same(a: float) -> bool:
        return abs(a - ref_loss) <= rtol * max(abs(ref_loss), 1e-12)

    if same(own["shifted"]):
        return "the model's loss is the next-token cross-entropy of its logits, which the fused path does not reproduce"
    if same(own["unshifted"]):
        return ("the model's own loss does not shift labels (position t is trained on token t, as BartForCausalLM "
                "does): the fused next-token loss differs from what this class trains")
    return (f"the model's own loss is not the cross-entropy of its logits ({own['shifted']:.5f} shifted, "
            f"{own['unshifted']:.5f} unshifted): it adds or reweights terms the fused loss does not know")


def _loss_and_grads(model, batch) -> tuple[float, dict[str, torch.Tensor], dict]:
    """The forward's loss and adapter gradients, and what its logits say: their count and cross-entropies."""
    model.zero_grad(set_to_none=True)
    out = model(**batch, use_cache=False)
    out.loss.backward()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    logits, labels = out.logits.detach(), batch["labels"]
    own = {"logits": logits.numel(), "shifted": float("nan"), "unshifted": float("nan")}
    if logits.numel():
        with torch.no_grad():
            flat = logits.float()
            own["shifted"] = _ce(flat[:, :-1], labels[:, 1:])
            own["unshifted"] = _ce(flat, labels)
    return out.loss.item(), grads, own


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).to(logits.device),
                                             ignore_index=-100).item()


# the probe's shapes, largest first: the first one whose plain step fits the card is measured (4 x 2048 ran out of
# an 80 GB H100 on the Llama-3-8B shape, which left the saving unmeasured on the most common training card)
MEMORY_SHAPES = (MEMORY_SHAPE, (2, 2048), (1, 2048), (1, 1024))


def _measure_memory(res, session: ModelSession, patch, model) -> None:
    """Peak memory of a training step with the plain loss and with the fused one, at the largest probe shape whose
    plain step fits the free memory of the card (a shape whose logits alone would take more than half of it is not
    tried; one that runs out is followed by the next smaller). What was tried and what was measured is said."""
    if not session.whole_fits:  # the slice's peak is not the model's: unmeasured, said so
        res.measure("memory", "skipped", "", f"the whole model is not loaded: {session.whole_absent}")
        res.message += "; memory not measured: the whole model is not loaded"
        return
    min_ratio = session.threshold("cce.min_saving_ratio")
    vocab = unwrap(model).get_output_embeddings().weight.shape[0]
    free = torch.cuda.mem_get_info(session.device)[0]
    tried = []
    for bsz, seq in MEMORY_SHAPES:
        if predicted_saving(bsz, seq, vocab, session.dtype) > free / 2:
            tried.append(f"{bsz}x{seq}: its logits alone would take over half of the {free / 2**30:.1f} GiB free")
            continue
        gen = torch.Generator().manual_seed(session.seed)
        ids = torch.randint(0, vocab, (bsz, seq), generator=gen).to(session.device)
        batch = {"input_ids": ids, "labels": ids}

        def step():
            model(**batch, use_cache=False).loss.backward()
            model.zero_grad(set_to_none=True)

        try:
            plain = cuda_peak_bytes(step, session.device)
            session.apply_patch(patch)
            try:
                fused = cuda_peak_bytes(step, session.device)
            finally:
                session.revert_patch(patch.id)
            break
        except torch.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            tried.append(f"{bsz}x{seq}: out of memory")
    else:
        res.measure("memory", "out of memory", "", "; ".join(tried))
        res.status = Status.WARN
        res.message += f"; no memory probe fits this card ({'; '.join(tried)})"
        # the saving is unmeasured, not refuted: the model's own loss (the fallback) needs more memory, not less
        res.fallback_patch = None
        return
    if tried:
        res.evidence["memory_probe_tried"] = tried
    predicted = predicted_saving(bsz, seq, vocab, session.dtype)
    ratio = (plain - fused) / predicted
    gib = 2**30
    res.measure("memory_batch", f"{bsz}x{seq}", "", ("the largest probe that fit (" + "; ".join(tried) + ")")
                if tried else "the largest probe shape")
    res.measure("peak_plain", round(plain / gib, 3), "GiB")
    res.measure("peak_fused", round(fused / gib, 3), "GiB")
    res.measure("saving_predicted", round(predicted / gib, 3), "GiB")
    res.measure("saving_ratio", round(ratio, 3), "measured/predicted", compare=">=", limit=min_ratio)
    res.message += f"; peak {plain / gib:.2f} -> {fused / gib:.2f} GiB ({ratio:.2f} of predicted saving)"
    if ratio < min_ratio:
        res.status = Status.WARN
