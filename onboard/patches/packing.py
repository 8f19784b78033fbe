"""packing.no_cache_no_mask: packed rows run with use_cache=False and no attention mask.

transformers finds packed samples from position_ids only when no attention mask and no cache are given
(FM-PACK-MASK, FM-PACK-CACHE). This patch turns the cache off in the config and, on rows whose
position_ids restart, drops a mask that only marks right padding (it carries no information then).
"""

from __future__ import annotations

import torch

from onboard.patches.base import Applicability, PatchHandle, model_configs, set_attr, unwrap
from onboard.patches import ids


def is_packed(position_ids: torch.Tensor | None) -> bool:
    """True when some row's positions restart, i.e. the row holds several samples."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[1] < 2:
        return False
    return bool((position_ids[:, 1:] != position_ids[:, :-1] + 1).any())


def _mask_is_right_padding(mask: torch.Tensor) -> bool:
    """A 2D 0/1 mask whose ones form a prefix of every row: dropping it changes no real token."""
    if mask.dim() != 2:
        return False
    m = mask.to(torch.int8)
    return bool((m[:, 1:] <= m[:, :-1]).all())


class PackingPatch:
    id = ids.PACKING_NO_CACHE
    applicability = Applicability.SAFE
    keeps_unpacked_outputs = True  # a sample run alone gives the same logits (tested): cached values stay
    summary = "run packed rows with use_cache=False and no attention mask, so samples stay isolated"

    def applies_to(self, model) -> str | None:
        return None

    def apply(self, model, context=None) -> PatchHandle:
        base = unwrap(model)
        handle = PatchHandle(self.id)
        for config in model_configs(base):
            set_attr(handle, config, "use_cache", False)

        def pre_hook(module, args, kwargs):
            if torch.compiler.is_compiling():  # no data-dependent test inside a compiled graph (it breaks there):
                if kwargs.get("position_ids") is not None:  # a step without the cache isolates packed rows and
                    kwargs["use_cache"] = False  # changes nothing for others; the packing collator gives no mask
                return args, kwargs
            if not is_packed(kwargs.get("position_ids")):
                return None
            mask = kwargs.get("attention_mask")
            if mask is not None and _mask_is_right_padding(mask):
                kwargs["attention_mask"] = None
            kwargs["use_cache"] = False
            return args, kwargs

        hook = base.register_forward_pre_hook(pre_hook, with_kwargs=True)
        handle.on_revert(hook.remove)
        return handle


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B, T]: which sample of its row each token belongs to (a sample starts where positions restart)."""
    starts = torch.ones_like(position_ids, dtype=torch.long)
    starts[:, 1:] = (position_ids[:, 1:] != position_ids[:, :-1] + 1).long()
    return starts.cumsum(1)


def block_causal_mask(position_ids: torch.Tensor, dtype: torch.dtype, padding: torch.Tensor | None = None) -> torch.Tensor:
    """An additive [B, 1, T, T] mask: a token attends to the earlier tokens of its own sample only (and to no
    padding). Additive (0 / dtype min) because eager attention adds the mask to its scores."""
    doc = document_ids(position_ids)
    length = doc.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=doc.device).tril()
    allowed = (doc[:, :, None] == doc[:, None, :]) & causal
    if padding is not None:
        allowed &= padding.bool()[:, None, :]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=doc.device).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


class BlockMaskPatch:
    id = ids.PACKING_BLOCK_MASK
    applicability = Applicability.SAFE
    keeps_unpacked_outputs = True  # a sample run alone gives the same logits (tested): cached values stay
    summary = "give packed rows an explicit block-diagonal causal 4D mask, for models that ignore position_ids in their mask"

    def applies_to(self, model) -> str | None:
        backend = unwrap(model).config._attn_implementation
        if backend not in ("eager", "sdpa"):
            return f"{backend} attention takes no 4D mask (flash kernels find packed samples from position_ids)"
        return None

    def apply(self, model, context=None) -> PatchHandle:
        reason = self.applies_to(model)
        if reason:
            raise ValueError(f"{self.id} does not apply: {reason}")
        base = unwrap(model)
        handle = PatchHandle(self.id)
        for config in model_configs(base):
            set_attr(handle, config, "use_cache", False)
        dtype = next(p.dtype for p in base.parameters() if p.is_floating_point())

        def pre_hook(module, args, kwargs):
            positions = kwargs.get("position_ids")
            if torch.compiler.is_compiling():  # no data-dependent test inside a compiled graph (it breaks there):
                # a row of one sample gets the plain causal mask from the block mask; a caller's mask is kept
                if positions is None or kwargs.get("attention_mask") is not None:
                    return None
                kwargs["attention_mask"] = block_causal_mask(positions, dtype, None)
                kwargs["use_cache"] = False
                return args, kwargs
            if not is_packed(positions):
                return None
            mask = kwargs.get("attention_mask")
            if mask is not None and not _mask_is_right_padding(mask):
                return None  # a mask of the caller's own making: leave it
            kwargs["attention_mask"] = block_causal_mask(positions, dtype, mask)
            kwargs["use_cache"] = False
            return args, kwargs

        hook = base.register_forward_pre_hook(pre_hook, with_kwargs=True)
        handle.on_revert(hook.remove)
        return handle
