"""ATTN001: the attention backend training asks for can run this model, and agrees with eager attention."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from onboard.checks.base import Check, FixAvailability
from onboard.harness.inputs import needs_beyond_text_labels, needs_from_error, noncausal_mask_origin
from onboard.harness.result import Status
from onboard.patches.attention import current_backend, head_dims, unusable_reason
from onboard.patches import get_patch
from onboard.patches.base import unwrap
from onboard.patches import ids

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession


class AttentionCheck(Check):
    """What it does:
    Takes the attention backend training will use (--attn, else the one transformers chose) and checks
    that it can run this model: its kernel loads, it supports the model's head sizes (flash-attn kernels
    stop at head_dim 256), one forward and backward runs on a padded batch and on a packed row (the
    packed path builds its masks differently), and the padded batch gives the loss eager attention
    gives (relative 1e-4 in fp32, 2e-2 in bf16/fp16).

    Why it matters:
    A kernel that is not installed, or that rejects the head size, fails at the first training step or,
    worse, after hours of data loading; a backend that disagrees with eager attention trains a
    different model.

    Failure modes:
    FM-ATTN-HEADDIM (head_dim above the kernel's limit, e.g. Gemma 4's 512), FM-ATTN-KERNEL (the kernel
    cannot load here, e.g. flash-attn not installed, or crashes on the model: flex_attention's Inductor
    lowering failed on packed rows of head_dim 16 and 128 on an H200 with torch 2.11),
    FM-ATTN-MISMATCH (the loss differs from eager), FM-ATTN-NONCAUSAL (changing the later tokens of a sample
    moves the predictions before them: the model attends both ways, as BERT-style causal-LM classes do
    without is_decoder, and next-token training reads the answer; an exact-0 test), FM-MODEL-FORWARD (the forward fails with eager
    attention too, and the model's own error names nothing text data lacks: a model that cannot run the text it
    is given, e.g. learned positions fewer than the samples' tokens).

    Not a finding: a forward that needs what text data does not have is NOT_APPLICABLE, with what it needs, read
    from the model (onboard.harness.inputs): a required forward argument the batch left out (BLIP's pixel_values),
    a forward parameter or config field its error names (UDOP's bbox, Reformer's axial_pos_shape), a forward that
    runs without labels while its loss refuses text labels (GIT, which runs once given pixel_values; MusicGen's
    codebook labels), or no loss given labels. An encoder-decoder (--task seq2seq, found by --task auto) runs the
    padded step with the reply as its labels and the causality probe on its decoder: later labels changed,
    earlier log-probabilities move by exactly 0.

    Fix:
    attention.fallback (safe): switch to sdpa, else flex_attention, else eager; verified by re-running
    the check on the new backend. attention.causal (safe): set is_decoder (BERT-style classes) so the model
    attends only to earlier tokens; verified by the same probe. A mismatch or a failing forward has no
    automatic fix.
    """

    code = "ATTN001"
    runs_on = "slice"
    name = "attention"
    summary = "the attention backend loads, supports the head size, and agrees with eager"
    requires = ("LOAD001",)
    fix_availability = FixAvailability.SOMETIMES
    version = 4  # 2: XLNet's attn_type switch is a fix; a model with no switch says what was looked for
    # 3: NOT_APPLICABLE where the model needs inputs text lacks; seq2seq probed through its decoder
    # 4: the seq2seq probe keeps the reply's last token (fairseq-style decoders start from it); a mask's origin named

    def run(self, session: ModelSession):
        model = session.train_model
        base = unwrap(model)
        wanted = session.attn or current_backend(base)
        res = self.result(Status.PASS, "")
        res.measure("backend", wanted)
        res.measure("head_dim", ", ".join(map(str, head_dims(base.config))) or "unknown")
        reason = unusable_reason(base.config, wanted)
        if reason:
            res.status, res.diagnosis, res.proposed_patch = Status.FAIL, "FM-ATTN-HEADDIM", ids.ATTENTION_FALLBACK
            res.message = reason
            return res
        if wanted != current_backend(base):
            error = session.attn_load_error
            if error is None:
                try:
                    session.switch_attention(wanted)
                except (ImportError, ValueError) as exc:
                    error = str(exc).splitlines()[0]
            if error is not None:
                res.status, res.diagnosis, res.proposed_patch = Status.FAIL, "FM-ATTN-KERNEL", ids.ATTENTION_FALLBACK
                res.message = f"{wanted} cannot run here: {error}"
                return res

        batch = session.probe_batch()
        # an encoder-decoder trains right-padded (PACK001): no packed row to run
        probes = (("a padded batch", batch),) if session.seq2seq else (("a padded batch", batch),
                                                                        ("a packed row", _packed_row(session)))
        for kind, inputs in probes:
            try:
                _step(model, inputs)
            except Exception as exc:  # noqa: BLE001 - a kernel failing at run time is the finding
                text = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
                res.status = Status.FAIL
                if wanted != "eager" and _runs_with(session, "eager", lambda: _step(model, inputs)):
                    res.diagnosis, res.proposed_patch = "FM-ATTN-KERNEL", ids.ATTENTION_FALLBACK
                    res.message = f"{wanted} fails on {kind} of this model, eager runs it: {text}"
                elif _kernel_package(exc):  # an installed kernel package refuses: the machine's, not the model's
                    res.status = Status.ERROR
                    res.message = (f"the installed {_kernel_package(exc)} kernels fail on {kind}: {text}; onboard "
                                   "cannot judge the model with them (remove the package for the torch reference, "
                                   "or install what it asks for)")
                elif needs := needs_from_error(base, inputs, exc) or needs_beyond_text_labels(model, inputs):
                    # the probe does not fit the model: not a finding (the model's own signature or error says)
                    res.status, res.needs = Status.SKIP, needs
                    res.message = f"not applicable: text-only training inputs do not fit this model; it needs {needs}"
                else:  # not the backend: the model's own forward fails on text-only data
                    res.diagnosis = "FM-MODEL-FORWARD"
                    res.message = f"a text-only forward on {kind} fails with every backend tried ({wanted}, eager): {text}"
                return res
        loss = _loss(model, batch)
        try:
            positions = _logit_positions(model, batch, session.seq2seq)
        except Exception as exc:  # noqa: BLE001 - the model's own need, not the backend's
            res.status, res.diagnosis = Status.FAIL, "FM-MODEL-FORWARD"
            res.message = (f"a text-only forward without labels fails: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:160]}{_seq2seq_hint(session)}")
            return res
        predicted = batch["labels" if session.seq2seq else "input_ids"].shape[1]
        if positions < predicted:  # the text goes in, no next-token logits come out for it
            res.status, res.diagnosis = Status.FAIL, "FM-MODEL-FORWARD"
            res.message = (f"a text-only forward gives logits for {positions} of {predicted} positions: the model "
                           f"does not predict the text it is given{_seq2seq_hint(session)}")
            return res
        future = _future_leak(model, batch, session.seq2seq)
        res.measure("future_leak", float(f"{future:.3g}"), "nats",
                    f"<= {session.threshold('attention.future_tolerance'):g}: later tokens changed, earlier logits moved")
        if future > session.threshold("attention.future_tolerance"):
            res.status, res.diagnosis = Status.FAIL, "FM-ATTN-NONCAUSAL"
            res.message = (f"the model is not causal: changing later tokens moves earlier predictions by {future:.3g} "
                           "nats, so next-token training reads the answer")
            no_switch = get_patch(ids.ATTENTION_CAUSAL).applies_to(model)
            if no_switch is None:
                res.proposed_patch = ids.ATTENTION_CAUSAL
            else:  # nothing onboard can turn: say what was looked for, and where the model's code builds its mask
                import inspect

                origin = noncausal_mask_origin(base, batch["input_ids"][:1])
                res.message += f"; {no_switch}; " + (origin or "its attention is built in "
                                                     f"{Path(inspect.getsourcefile(type(base))).name}")
            return res
        if wanted == "eager":
            res.message = f"{wanted} runs (loss {loss:.4f})"
            return res
        try:
            with session.attention("eager"):
                ref = _loss(model, batch)
        except Exception as exc:  # noqa: BLE001 - the reference cannot run: nothing to compare against
            res.measure("loss_eager", "not run", "", f"eager fails: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            res.message = f"{wanted} runs (loss {loss:.4f}); eager attention cannot run this model, so not compared"
            return res
        rtol = session.threshold("attention.loss_rtol")
        if not (math.isfinite(loss) and math.isfinite(ref)):  # no labelled token: no loss to compare (LOSS001's)
            res.measure("loss_rel_diff", "not judged", "", f"losses {loss} and {ref}: no labelled token to compare on")
            res.message = f"{wanted} runs; its loss is not compared with eager's: the data has no labelled token"
            return res
        rel = abs(loss - ref) / max(abs(ref), 1e-12)
        res.measure("loss", round(loss, 6), "nats")
        res.measure("loss_eager", round(ref, 6), "nats")
        res.measure("loss_rel_diff", float(f"{rel:.3g}"), "", compare="<=", limit=rtol)
        if rel > rtol:
            res.status, res.diagnosis = Status.FAIL, "FM-ATTN-MISMATCH"
            res.message = f"{wanted} gives loss {loss:.5f}, eager {ref:.5f} (rel {rel:.2g})"
        else:
            res.message = f"{wanted} runs and matches eager to {rel:.1g}"
        return res


def _seq2seq_hint(session: ModelSession) -> str:
    """Where the run was told --task causal and the model behaves as an encoder-decoder: say how to probe it."""
    from onboard.harness.inputs import objective

    if session.seq2seq or objective(session.model, session.tokenizer) != "seq2seq":
        return ""
    return " (an encoder-decoder: its logits follow the labels given; --task seq2seq, or auto, probes it so)"


def _runs_with(session: ModelSession, backend: str, fn) -> bool:
    """Whether fn() runs with the model switched to `backend` (switched back after)."""
    try:
        with session.attention(backend):
            fn()
        return True
    except Exception:  # noqa: BLE001
        return False


KERNEL_PACKAGES = ("fla", "causal_conv1d", "mamba_ssm", "flash_attn", "liger_kernel", "kernels", "deep_gemm")


def _kernel_package(exc: BaseException) -> str | None:
    """The optional kernel package an error was raised in (its innermost frame under that package), if any:
    flash-linear-attention on a Triton it refuses, a mamba-ssm built without causal-conv1d."""
    import traceback

    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        parts = frame.filename.replace("\\", "/").split("/")
        for package in KERNEL_PACKAGES:
            if package in parts[:-1]:
                return package
    return None


def _packed_row(session: ModelSession) -> dict:
    """The two shortest samples as one packed row (position_ids restart, no mask): the path packed
    training takes, which builds its masks differently (flex_attention compiles a block mask for it)."""
    import torch

    two = sorted(session.examples, key=len)[:2]
    ids = torch.tensor([[t for ex in two for t in ex.input_ids]], device=session.device)
    start = session.position_start
    positions = torch.tensor([[p for ex in two for p in range(start, start + len(ex))]], device=session.device)
    return {"input_ids": ids, "position_ids": positions, "labels": ids}


def _future_leak(model, batch, seq2seq: bool = False) -> float:
    """How far the log-probabilities at the first half of a sample move when its second half changes: exactly
    0 for a causal model (a prediction at t reads tokens up to t only). seq2seq: the decoder's, the labels' second
    half changed (the encoder's input is the same)."""
    import torch

    if seq2seq:
        labels = batch["labels"][:1]
        labels = labels[:, : int((labels[0] != -100).sum())]
        enc = {"input_ids": batch["input_ids"][:1], "attention_mask": batch["attention_mask"][:1]}
        half = labels.shape[1] // 2
        other = labels.clone()
        pool = torch.unique(labels[0])
        # the reply's last token (its end-of-sequence) is kept: fairseq-style decoders (FSMT) start from it, moved to
        # the front, which is constant over well-formed data
        other[0, half:-1] = pool[(torch.searchsorted(pool, labels[0, half:-1]) + 1) % len(pool)]
        with torch.no_grad():
            a = model(**enc, labels=labels, use_cache=False).logits[0, :half].float().log_softmax(-1)
            b = model(**enc, labels=other, use_cache=False).logits[0, :half].float().log_softmax(-1)
        return (a - b).abs().max().item()
    ids = batch["input_ids"][:1]
    mask = batch.get("attention_mask")
    length = int(mask[0].sum()) if mask is not None else ids.shape[1]
    ids = ids[:, :length]
    half = length // 2
    other = ids.clone()
    # other tokens from the second half on, each the next of the sample's own (valid) ids: never past the
    # embedding, and different wherever the sample holds two distinct ids
    pool = torch.unique(ids[0])
    position = torch.searchsorted(pool, ids[0, half:])
    other[0, half:] = pool[(position + 1) % len(pool)]
    with torch.no_grad():
        a = model(input_ids=ids, use_cache=False).logits[0, :half].float().log_softmax(-1)
        b = model(input_ids=other, use_cache=False).logits[0, :half].float().log_softmax(-1)
    return (a - b).abs().max().item()


def _logit_positions(model, batch, seq2seq: bool = False) -> int:
    """How many positions the forward gives logits for: without labels (a causal LM's are the input's), or with them
    for seq2seq (the decoder's are the labels')."""
    import torch

    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels" or seq2seq}, use_cache=False).logits
    return logits.shape[1] if logits is not None and logits.dim() == 3 else 0


def _step(model, batch) -> None:
    """A forward and backward as training runs them: in train mode (Reformer's reversible layers refuse a
    backward in eval mode). What fails only in train mode while eval mode runs (a training guard that asks for
    token_type_ids) is a training-step finding, TRAIN001's to make (FM-INPUT-EXTRA): ATTN001 fails only when
    the step fails in both modes, and then names the train-mode error. The mode is restored after."""
    was_training = model.training
    try:
        try:
            _forward_backward(model, batch, train=True)
        except Exception as in_training:  # noqa: BLE001
            try:
                _forward_backward(model, batch, train=False)
            except Exception:  # noqa: BLE001 - both fail: the train-mode error is what training meets
                raise in_training from None
    finally:
        model.train(was_training)


def _forward_backward(model, batch, train: bool) -> None:
    model.train(train)
    try:
        model.zero_grad(set_to_none=True)
        loss = model(**batch, use_cache=False).loss
        if loss is None:  # what the Trainer refuses too: it trains on the loss the model returns
            raise ValueError("given labels, the forward returns no loss (the Trainer has nothing to train on)")
        loss.backward()
    finally:
        model.zero_grad(set_to_none=True)


def _loss(model, batch) -> float:
    """The loss in the session's mode (eval: no dropout), for comparing backends."""
    import torch

    with torch.no_grad():
        loss = model(**batch, use_cache=False).loss
    if loss is None:
        raise ValueError("given labels, the forward returns no loss (the Trainer has nothing to train on)")
    return loss.item()
