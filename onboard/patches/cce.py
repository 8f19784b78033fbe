"""cce.fused_loss: the training loss through Cut Cross Entropy, on the instance that was actually loaded.

The model runs as usual, except that its output layer (`get_output_embeddings()`) is asked for nothing:
for the duration of a labelled forward it records the tensor that enters it and returns an empty
[..., 0] tensor, so the batch x sequence x vocab logits never exist. The loss comes from
`cut_cross_entropy.linear_cross_entropy` on that recorded input and the layer's weight (and bias). The
patch sits on the loaded instance, not on a class name, so a ForConditionalGeneration model is patched as
surely as a ForCausalLM, and a head with its own transform before the output layer (BERT's dense +
LayerNorm) is fused after that transform (FM-CCE-INACTIVE, FM-CCE-MATH).

What happens between the output layer and the logits is measured when the patch is applied, not read
from config names that differ between families: one forward on a probe input gives the layer's output z
and the logits L, and the patch fits L = s * z (a scale: Cohere's logit_scale, Granite's logits_scaling,
FalconH1's lm_head_multiplier) or L = c * tanh(s * z / c) (softcapping, with c taken from the config's
softcap fields and confirmed by the fit). A transform that is neither is refused, with the fit error.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass

import torch

from onboard.patches.base import Applicability, PatchContext, PatchHandle, refuse_unless_applicable, set_attr, unwrap
from onboard.patches import ids


@dataclass
class CceStats:
    calls: int = 0
    impl: str = ""
    scale: float = 1.0
    softcap: float | None = None
    vocab: int = 0  # logits columns the model keeps (a padded output layer may have more rows)
    fit_error: float = 0.0


def default_impl(weight: torch.Tensor) -> str:
    """The Triton kernel on CUDA; its backward takes only bf16/fp16, so fp32 models use torch_compile."""
    if weight.device.type == "cuda" and weight.dtype in (torch.bfloat16, torch.float16):
        return "cce"
    return "torch_compile"


def softcap_candidates(config) -> list[float]:
    """Softcap values the config names: hypotheses that the measured fit must confirm."""
    found = []
    for cfg in {id(c): c for c in (config, config.get_text_config())}.values():
        for key, value in cfg.to_dict().items():
            flat = key.replace("_", "")  # final_logit_softcapping, output_logit_soft_cap (xLSTM)
            if "logit" in flat and "softcap" in flat and isinstance(value, (int, float)) and value > 0:
                found.append(float(value))
    return sorted(set(found))


def fit_transform(z: torch.Tensor, logits: torch.Tensor, softcaps: list[float], rtol: float) -> tuple[float, float | None, float]:
    """(scale, softcap, relative error) of the best fit logits = softcap(scale * z); raises if none fits."""
    z, logits = z.float(), logits.float()
    if torch.equal(z, logits):
        return 1.0, None, 0.0
    fits = []
    for cap in [*softcaps, None]:  # a confirmed softcap first: on small logits tanh is linear and both fit
        if cap is None:
            target = logits
        else:
            if logits.abs().max() >= cap:
                continue
            target = cap * torch.atanh(logits / cap)
        scale = float((target * z).sum() / (z * z).sum().clamp(min=1e-30))
        err = float((scale * z - target).abs().max() / target.abs().max().clamp(min=1e-30))
        if err <= rtol:
            return scale, cap, err
        fits.append((err, cap))
    worst = min(fits, key=lambda f: f[0])[0] if fits else float("nan")
    raise ValueError(f"the logits are not a scale or softcap of the output layer's output (best fit off by {worst:.2g} relative)")


# Not a base dependency (pyproject's [cce] extra): on Linux cut-cross-entropy imports triton and requires it.
CCE_REQUIREMENT = "cut-cross-entropy>=25.1.1"
CCE_INSTALL = f'pip install "{CCE_REQUIREMENT}"'


def cce_missing() -> str | None:
    """Why cut_cross_entropy cannot be imported here, with the line that installs it; None when it can.

    Importing it is the test, not finding it: on Linux the package imports triton at import time, so a copy
    installed without triton is found but does not import."""
    try:
        import cut_cross_entropy  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: a shared library of triton's that does not load
        error = (str(exc).splitlines() or [type(exc).__name__])[0]
        name = getattr(exc, "name", None) or ""
        if name.split(".")[0] == "cut_cross_entropy":
            return f"cut-cross-entropy is not installed ({error}); {CCE_INSTALL} installs it"
        return (f"cut_cross_entropy is installed but does not import ({error}; it imports triton on Linux); "
                f"{CCE_INSTALL} installs what it requires")
    return None


class CcePatch:
    id = ids.CCE_FUSED_LOSS
    applicability = Applicability.SAFE
    summary = "compute the loss with cut_cross_entropy.linear_cross_entropy on the output layer's input; no logits"

    def applies_to(self, model) -> str | None:
        missing = cce_missing()
        if missing:
            return missing
        head = unwrap(model).get_output_embeddings()
        if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
            return "the model has no output embedding weight to fuse"
        if not isinstance(head, torch.nn.Linear) or hasattr(head, "lora_A"):
            return f"the output layer is a {type(head).__name__}, not a plain Linear"
        base = unwrap(model)
        if _encoder_decoder(base) and not callable(getattr(base, "prepare_decoder_input_ids_from_labels", None)):
            return ("an encoder-decoder that builds its decoder's input from the labels inside its forward (no "
                    "prepare_decoder_input_ids_from_labels): without labels the fused path cannot run its decoder")
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        missing = cce_missing()
        if missing:  # a report verified on a machine that had it, applied where it is not: the machine's, not the model's
            raise ImportError(f"{self.id} needs cut-cross-entropy: {missing}")
        from cut_cross_entropy import linear_cross_entropy

        refuse_unless_applicable(self, model)
        base = unwrap(model)
        head = base.get_output_embeddings()
        stats = CceStats(impl=default_impl(head.weight))
        stats.scale, stats.softcap, stats.vocab, stats.fit_error = measure_transform(model, head, context)
        original = base.forward
        handle = PatchHandle(self.id)
        handle.stats = stats

        # the original's signature shows through (__wrapped__): the Trainer keeps only the dataset columns a
        # forward's signature names (remove_unused_columns), and (*args, **kwargs) names none of input_ids
        # an encoder-decoder's decoder input comes from the labels (as DataCollatorForSeq2Seq builds it) and its
        # logits at t predict labels[t]: no shift
        seq2seq = _encoder_decoder(base)

        @functools.wraps(original)
        def forward(*args, labels=None, **kwargs):
            if labels is None:
                return original(*args, **kwargs)
            if seq2seq and kwargs.get("decoder_input_ids") is None and kwargs.get("decoder_inputs_embeds") is None:
                kwargs["decoder_input_ids"] = base.prepare_decoder_input_ids_from_labels(labels=labels.clone())
            captured = []

            def no_logits(hidden):
                captured.append(hidden)
                return hidden.new_empty(*hidden.shape[:-1], 0)

            own = head.__dict__.get("forward")  # an instance forward of someone else's (accelerate hooks)
            head.forward = no_logits
            try:
                out = original(*args, **kwargs)
            finally:
                if own is None:
                    del head.forward
                else:
                    head.forward = own
            if len(captured) != 1:
                raise RuntimeError(f"{self.id}: the output layer ran {len(captured)} times in one forward; "
                                   "the model computes its logits another way")
            hidden, weight = captured[0], head.weight[: stats.vocab]
            if head.bias is not None:  # fold the bias in as one more hidden feature
                hidden = torch.cat([hidden, hidden.new_ones(*hidden.shape[:-1], 1)], dim=-1)
                weight = torch.cat([weight, head.bias[: stats.vocab, None].to(weight.dtype)], dim=1)
            if stats.scale != 1.0:
                hidden = hidden * stats.scale
            n_items = kwargs.get("num_items_in_batch")
            loss = linear_cross_entropy(
                hidden, weight, labels.to(hidden.device), shift=0 if seq2seq else 1, softcap=stats.softcap,
                reduction="sum" if n_items is not None else "mean", impl=stats.impl,
            )
            if n_items is not None:
                loss = loss / n_items
            out.loss = loss
            stats.calls += 1
            return out

        set_attr(handle, base, "forward", forward)
        return handle


@torch.no_grad()
def measure_transform(model, head, context: PatchContext | None) -> tuple[float, float | None, int, float]:
    """One unlabelled forward: what enters the output layer, what it returns, and the logits that come out."""
    base = unwrap(model)
    probe = context.probe_batch() if context is not None and context.probe_batch is not None else None
    if probe is None:
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, head.weight.shape[0], (1, 16), generator=gen).to(head.weight.device)
        probe = {"input_ids": ids}
    if _encoder_decoder(base) and "labels" in probe:  # its decoder runs on the labels' shifted copy
        probe = {**probe, "decoder_input_ids": base.prepare_decoder_input_ids_from_labels(labels=probe["labels"].clone())}
    probe = {k: v for k, v in probe.items() if k != "labels"}
    outputs = []
    hook = head.register_forward_hook(lambda _m, _a, out: outputs.append(out))
    was_training = base.training
    base.eval()
    try:
        logits = model(**probe, use_cache=False).logits
    finally:
        hook.remove()
        base.train(was_training)
    if len(outputs) != 1:
        raise ValueError(f"the output layer ran {len(outputs)} times in one forward: the model computes its "
                         "logits another way, and a fused loss on that layer would not be the model's loss")
    z = outputs[0]
    if z.shape[:-1] != logits.shape[:-1] or z.shape[-1] < logits.shape[-1]:
        raise ValueError(f"the logits {tuple(logits.shape)} are not the output layer's {tuple(z.shape)} per position")
    vocab = logits.shape[-1]
    rtol = 1e-4 if logits.dtype == torch.float32 else 3e-2
    scale, softcap, err = fit_transform(z[..., :vocab], logits, softcap_candidates(base.config), rtol)
    return scale, softcap, vocab, err


def _encoder_decoder(base) -> bool:
    """An encoder-decoder, as the HF Trainer tells one (it counts such a model's labels whole for the same reason)."""
    return bool(getattr(getattr(base, "config", None), "is_encoder_decoder", False))


class ModelLossPatch:
    """Not a change of the model: training computes the model's own loss from full logits instead of the fused
    one. The fallback when the fused loss cannot be live or cannot reproduce the model's loss; it costs the
    logits' memory, which CCE001 states."""

    id = ids.CCE_MODEL_LOSS
    applicability = Applicability.SAFE
    keeps_unpacked_outputs = True
    summary = "train with the model's own loss over full logits (the fused loss left off), at the logits' memory cost"

    def applies_to(self, model) -> str | None:
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        return PatchHandle(self.id)
