"""cce.fused_loss: the training loss through Cut Cross Entropy, on the class that was actually loaded.

The decoder runs as usual; the model's own forward is asked for no logits (an empty `logits_to_keep`),
and the loss comes from `cut_cross_entropy.linear_cross_entropy` on the final hidden states and the
output embedding, so the batch x sequence x vocab logits never exist on the loss path. The patch sits on
the loaded instance, not on a class name, so a ForConditionalGeneration model is patched as surely as a
ForCausalLM (FM-CCE-INACTIVE). Logit transforms are carried into the fused loss (FM-CCE-MATH):
final_logit_softcapping, logit_scale (Cohere), logits_scaling (Granite) and an lm_head bias.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from onboard.patches.base import Applicability, PatchHandle, set_attr, unwrap


@dataclass
class CceStats:
    calls: int = 0
    impl: str = ""


def logit_transform(config) -> tuple[float | None, float]:
    """(softcap, hidden-state scale) that the model applies to its logits."""
    text = config.get_text_config()
    softcap = getattr(text, "final_logit_softcapping", None)
    scale = 1.0
    if getattr(text, "logit_scale", None):
        scale *= float(text.logit_scale)
    if getattr(text, "logits_scaling", None):
        scale /= float(text.logits_scaling)
    return softcap, scale


def default_impl(weight: torch.Tensor) -> str:
    """The Triton kernel on CUDA; its backward takes only bf16/fp16, so fp32 models use torch_compile."""
    if weight.device.type == "cuda" and weight.dtype in (torch.bfloat16, torch.float16):
        return "cce"
    return "torch_compile"


class CcePatch:
    id = "cce.fused_loss"
    applicability = Applicability.SAFE
    summary = "compute the loss with cut_cross_entropy.linear_cross_entropy; logits are never materialised"

    def applies_to(self, model) -> str | None:
        base = unwrap(model)
        head = base.get_output_embeddings()
        if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
            return "the model has no output embedding weight to fuse"
        if not isinstance(head, torch.nn.Linear) or hasattr(head, "lora_A"):
            return f"the output layer is a {type(head).__name__}, not a plain Linear"
        if "logits_to_keep" not in inspect.signature(base.forward).parameters:
            return f"{type(base).__name__}.forward takes no logits_to_keep"
        try:
            base.get_decoder()
        except (AttributeError, NotImplementedError):
            return f"{type(base).__name__} exposes no decoder"
        return None

    def apply(self, model, context=None) -> PatchHandle:
        from cut_cross_entropy import linear_cross_entropy

        reason = self.applies_to(model)
        if reason:
            raise ValueError(f"{self.id} does not apply: {reason}")
        base = unwrap(model)
        decoder, head = base.get_decoder(), base.get_output_embeddings()
        softcap, scale = logit_transform(base.config)
        stats = CceStats(impl=default_impl(head.weight))
        original = base.forward
        handle = PatchHandle(self.id)
        handle.stats = stats

        def forward(*args, labels=None, **kwargs):
            if labels is None:
                return original(*args, **kwargs)
            captured = []
            hook = decoder.register_forward_hook(lambda _m, _a, out: captured.append(out))
            try:
                kwargs["logits_to_keep"] = torch.empty(0, dtype=torch.long, device=head.weight.device)
                out = original(*args, **kwargs)
            finally:
                hook.remove()
            hidden = captured[0][0]
            weight = head.weight
            if scale != 1.0:
                hidden = hidden * scale
            if head.bias is not None:  # fold the bias in as one more hidden feature
                hidden = torch.cat([hidden, hidden.new_ones(*hidden.shape[:-1], 1)], dim=-1)
                weight = torch.cat([weight, head.bias[:, None].to(weight.dtype)], dim=1)
            n_items = kwargs.get("num_items_in_batch")
            loss = linear_cross_entropy(
                hidden, weight, labels.to(hidden.device), shift=1, softcap=softcap,
                reduction="sum" if n_items is not None else "mean", impl=stats.impl,
            )
            if n_items is not None:
                loss = loss / n_items
            out.loss = loss
            stats.calls += 1
            return out

        set_attr(handle, base, "forward", forward)
        return handle
