"""attention.fallback: move off an attention kernel that cannot run this model (FM-ATTN-HEADDIM).

flash-attn kernels support head_dim up to 256 (Gemma 4's global layers use 512), and a kernel that is
not installed cannot run at all. The fallback is the first backend of sdpa, flex_attention, eager that the
model accepts; all three compute the same attention, so the math of a correct model is unchanged.
"""

from __future__ import annotations

import torch

from onboard.patches.base import (Applicability, PatchContext, PatchHandle, model_configs, refuse_unless_applicable,
                                  set_attr, unwrap)
from onboard.patches import ids

FLASH_MAX_HEAD_DIM = 256
FALLBACK_ORDER = ("sdpa", "flex_attention", "eager")


def head_dims(config) -> list[int]:
    """Every head size the text model's attention layers use (per-layer configs, e.g. Gemma 4's global
    layers, included); hidden_size / heads only where the config names no head_dim."""
    fields = config.get_text_config().to_dict()  # a dict: per-layer configs refuse attribute access
    layers = fields.get("per_layer_config") or {}
    dims = [fields.get("head_dim"), fields.get("global_head_dim")]
    dims += [layer.get("head_dim") for layer in layers.values() if isinstance(layer, dict)]
    if not any(dims) and fields.get("hidden_size") and fields.get("num_attention_heads"):
        dims.append(fields["hidden_size"] // fields["num_attention_heads"])
    return sorted({d for d in dims if isinstance(d, int) and d > 0})


def unusable_reason(config, backend: str | None) -> str | None:
    """Why `backend` cannot run this model, known before running it."""
    if backend and backend.startswith("flash_attention") and max(head_dims(config), default=0) > FLASH_MAX_HEAD_DIM:
        return f"{backend} supports head_dim <= {FLASH_MAX_HEAD_DIM}, the model uses {max(head_dims(config))}"
    return None


def current_backend(model) -> str:
    return unwrap(model).config._attn_implementation


class AttentionFallbackPatch:
    id = ids.ATTENTION_FALLBACK
    applicability = Applicability.SAFE
    summary = "switch to sdpa (else flex_attention, else eager) when the attention kernel cannot run the model"

    def applies_to(self, model) -> str | None:
        if not hasattr(unwrap(model), "set_attn_implementation"):
            return f"{type(unwrap(model)).__name__} cannot switch attention implementation"
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        """Sets the backend on the model and names it on the handle: the session's backend follows it."""
        base = unwrap(model)
        old = current_backend(base)
        errors = []
        for backend in FALLBACK_ORDER:
            try:
                base.set_attn_implementation(backend)
                break
            except (ImportError, ValueError) as exc:
                errors.append(f"{backend}: {exc}")
        else:
            raise ValueError("no fallback attention backend accepted the model: " + "; ".join(errors))
        handle = PatchHandle(self.id, backend=backend)
        handle.on_revert(lambda: restore_backend(base, old))
        return handle


def restore_backend(base, backend: str) -> None:
    """Back to `backend`: a model (or a sub-model, a vision tower without sdpa) that refuses it keeps the request
    in its config, as it had it before (the old kernel never loaded here: it was only asked for)."""
    try:
        base.set_attn_implementation(backend)
    except (ImportError, ValueError):
        base.config._attn_implementation = backend


class CausalAttentionPatch:
    """attention.causal: make a model that attends to later tokens causal (FM-ATTN-NONCAUSAL).

    BERT-style classes (BertLMHeadModel, RobertaForCausalLM, ...) are causal only with `config.is_decoder`;
    loaded from an encoder checkpoint, or from the default config, they attend both ways, and next-token
    training then reads the answer (transformers warns "add `is_decoder=True`"). PaliGemma's config sets its
    Gemma text model's `use_bidirectional_attention` (the prefix-LM of its pretraining), so its attention
    modules are not causal: eager builds a causal mask anyway, sdpa without a mask attends both ways. XLM is
    causal only with `config.causal` (its CLM checkpoints set it, its MLM ones do not). XLNet's default
    `attn_type="bi"` attends both ways; `"uni"` builds its causal mask (and relative positions to match), but
    transformers' uni path cannot add a padding mask for more than one row, so under "uni" a mask that only marks
    right padding (it hides nothing from a real token under a causal mask) is dropped before XLNet's forward. The
    patch sets `is_decoder` and `causal`, clears `use_bidirectional_attention`, turns `attn_type` "bi" into
    "uni", and marks the text model's self-attention modules causal (sdpa and flash kernels read that flag); a
    vision tower's attention is left as it is. ATTN001's exact probe (earlier log-probabilities move by 0 when
    later tokens change) verifies it; a model none of these switches reaches stays NOT_READY."""

    id = ids.ATTENTION_CAUSAL
    applicability = Applicability.SAFE
    summary = "make the text model's attention causal (is_decoder, use_bidirectional_attention, module flags)"

    def applies_to(self, model) -> str | None:
        config = unwrap(model).config.get_text_config()
        if hasattr(config, "is_decoder") or getattr(config, "use_bidirectional_attention", None) or \
                getattr(config, "causal", None) is False or getattr(config, "attn_type", None) == "bi":
            return None
        if any(getattr(m, "is_causal", None) is False for _, m in _text_modules(unwrap(model))):
            return None
        return (f"{type(unwrap(model)).__name__} has no switch that makes its attention causal (none of is_decoder, "
                f"causal, use_bidirectional_attention, attn_type in its config, nor an is_causal module flag)")

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        refuse_unless_applicable(self, model)
        base = unwrap(model)
        handle = PatchHandle(self.id)
        for config in model_configs(base):
            if hasattr(config, "is_decoder"):
                set_attr(handle, config, "is_decoder", True)
            if getattr(config, "use_bidirectional_attention", None):
                set_attr(handle, config, "use_bidirectional_attention", False)
            if getattr(config, "causal", None) is False:  # XLM: its masked-LM checkpoints attend both ways
                set_attr(handle, config, "causal", True)
            if getattr(config, "attn_type", None) == "bi":  # XLNet: "uni" is its causal attention
                set_attr(handle, config, "attn_type", "uni")
        for name, module in [("", base), *_text_modules(base)]:
            if getattr(module, "attn_type", None) == "bi":  # XLNet's model and LM head copy it at init
                set_attr(handle, module, "attn_type", "uni")
                if hasattr(module, "create_mask"):  # the XLNetModel that builds the mask
                    hook = module.register_forward_pre_hook(_right_padding_dropped, with_kwargs=True)
                    handle.on_revert(hook.remove)
        for name, module in _text_modules(base):
            if getattr(module, "is_causal", None) is False and "cross" not in name.lower():
                set_attr(handle, module, "is_causal", True)
            if getattr(module, "causal", None) is False:  # XLM's transformer copies config.causal at init
                set_attr(handle, module, "causal", True)
        return handle


def _right_padding_dropped(module, args, kwargs):
    """XLNet under attn_type "uni": transformers adds the padding mask to its causal mask in place, which fails for
    any batch of more than one row (modeling_xlnet.py: `attn_mask += data_mask[:, :, :, None]`, shape
    [q, k, 1, 1] against [q, k, batch, 1]). A mask that only marks right padding carries nothing under a causal
    mask (no real token sees a later position, and XLNet's relative positions do not depend on it), so it is
    dropped there; any other mask is left for the model to refuse."""
    mask = kwargs.get("attention_mask")
    if mask is None or mask.dim() != 2 or mask.shape[0] < 2 or kwargs.get("perm_mask") is not None:
        return None
    lengths = mask.sum(-1, keepdim=True)
    right_padding = mask.eq(torch.arange(mask.shape[1], device=mask.device)[None] < lengths).all()
    if not bool(right_padding):
        return None
    kwargs["attention_mask"] = None
    return args, kwargs


def _text_modules(base):
    """The text model's modules (get_decoder(): the language model of a VLM, the encoder stack of a BERT-style
    class), so a vision tower's bidirectional attention is never touched; the whole model where there is none."""
    import torch

    try:
        decoder = base.get_decoder()
    except Exception:  # noqa: BLE001 - a class without a decoder accessor
        decoder = None
    return (decoder if isinstance(decoder, torch.nn.Module) else base).named_modules()
