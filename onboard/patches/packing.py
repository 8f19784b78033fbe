"""packing.no_cache_no_mask: packed rows run with use_cache=False and no attention mask.

transformers finds packed samples from position_ids only when no attention mask and no cache are given
(FM-PACK-MASK, FM-PACK-CACHE). This patch turns the cache off in the config and, on rows whose
position_ids restart, drops a mask that only marks right padding (it carries no information then).
"""

from __future__ import annotations

import torch

from onboard.patches.base import (Applicability, PatchContext, PatchHandle, model_configs, refuse_unless_applicable,
                                  set_attr, unwrap)
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


def hooked_forwards(model, patch_id: str, pre_hook) -> PatchHandle:
    """A handle that turns the cache off in the model's configs and runs `pre_hook` (with kwargs) before each of
    its forwards: what the packing patches share."""
    base = unwrap(model)
    handle = PatchHandle(patch_id)
    for config in model_configs(base):
        set_attr(handle, config, "use_cache", False)
    hook = base.register_forward_pre_hook(pre_hook, with_kwargs=True)
    handle.on_revert(hook.remove)
    return handle


class PackingPatch:
    id = ids.PACKING_NO_CACHE
    applicability = Applicability.SAFE
    keeps_unpacked_outputs = True  # a sample run alone gives the same logits (tested): cached values stay
    summary = "run packed rows with use_cache=False and no attention mask, so samples stay isolated"

    def applies_to(self, model) -> str | None:
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
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

        return hooked_forwards(model, self.id, pre_hook)


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B, T]: which sample of its row each token belongs to (a sample starts where positions restart)."""
    starts = torch.ones_like(position_ids, dtype=torch.long)
    starts[:, 1:] = (position_ids[:, 1:] != position_ids[:, :-1] + 1).long()
    return starts.cumsum(1)


def block_causal_mask(position_ids: torch.Tensor, dtype: torch.dtype, padding: torch.Tensor | None = None,
                      window: int | None = None, chunk: int | None = None) -> torch.Tensor:
    """An additive [B, 1, T, T] mask: a token attends to the earlier tokens of its own sample only (and to no
    padding); with `window`, only to the last `window` positions of its sample (itself included), with `chunk`
    only within its chunk of `chunk` positions, both counted from the sample's own start as when it runs alone
    (transformers' sliding-window and chunked overlays, on the sample's positions). Additive (0 / dtype min)
    because eager attention adds the mask to its scores."""
    doc = document_ids(position_ids)
    length = doc.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=doc.device).tril()
    allowed = (doc[:, :, None] == doc[:, None, :]) & causal
    pos = position_ids.to(doc.device)
    if window is not None:
        allowed &= (pos[:, :, None] - pos[:, None, :]) < window
    if chunk is not None:
        allowed &= (pos[:, :, None] // chunk) == (pos[:, None, :] // chunk)
    if padding is not None:
        allowed &= padding.bool()[:, None, :]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=doc.device).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


# transformers' layer types and the overlay each adds to a causal mask (masking_utils: sliding_window_overlay,
# chunked_overlay), as block_causal_mask's keyword and the config field giving its size
LAYER_TYPE_OVERLAYS = {"full_attention": None, "sliding_attention": ("window", "sliding_window"),
                       "chunked_attention": ("chunk", "attention_chunk_size")}


def layer_masks(config, position_ids: torch.Tensor, dtype: torch.dtype, padding: torch.Tensor | None = None):
    """The block mask each layer type of the model needs. A model whose text config lists `layer_types` other
    than full attention (sliding or chunked layers: GPT-OSS, Gemma 3, Llama 4, AFMoE) gets a {layer_type: mask}
    mapping, which transformers models with layer types take in place of building their own masks: each keeps
    its window or chunk, within each sample. A model of one kind gets one tensor, windowed when its config gives
    every layer a sliding window (Mistral: no layer types, `sliding_window` set)."""
    text = config.get_text_config()
    types = getattr(text, "layer_types", None)
    if isinstance(types, (list, tuple)) and set(types) - {"full_attention"}:
        masks = {}
        for kind in dict.fromkeys(types):
            # a layer type whose mask onboard does not know (Hunyuan's indexed attention, a recurrent layer) gets
            # the plain block mask, as every layer did before: PACK001's harm measure judges it
            overlay = LAYER_TYPE_OVERLAYS.get(kind)
            extra = {} if overlay is None else {overlay[0]: getattr(text, overlay[1], None)}
            masks[kind] = block_causal_mask(position_ids, dtype, padding, **extra)
        return masks
    window = getattr(text, "sliding_window", None) if types is None and getattr(text, "use_sliding_window", True) else None
    return block_causal_mask(position_ids, dtype, padding, window=window if isinstance(window, int) else None)


class BlockMaskPatch:
    id = ids.PACKING_BLOCK_MASK
    applicability = Applicability.SAFE
    keeps_unpacked_outputs = True  # a sample run alone gives the same logits (tested): cached values stay
    summary = ("give packed rows an explicit block-diagonal causal 4D mask per layer type (sliding and chunked layers "
               "keep their window within each sample), for models that ignore position_ids in their mask")

    def applies_to(self, model) -> str | None:
        backend = unwrap(model).config._attn_implementation
        if backend not in ("eager", "sdpa"):
            return f"{backend} attention takes no 4D mask (flash kernels find packed samples from position_ids)"
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        refuse_unless_applicable(self, model)
        dtype = next(p.dtype for p in unwrap(model).parameters() if p.is_floating_point())
        config = unwrap(model).config

        def pre_hook(module, args, kwargs):
            positions = kwargs.get("position_ids")
            if torch.compiler.is_compiling():  # no data-dependent test inside a compiled graph (it breaks there):
                # a row of one sample gets the plain causal mask from the block mask; a caller's mask is kept
                if positions is None or kwargs.get("attention_mask") is not None:
                    return None
                kwargs["attention_mask"] = layer_masks(config, positions, dtype, None)
                kwargs["use_cache"] = False
                return args, kwargs
            if not is_packed(positions):
                return None
            mask = kwargs.get("attention_mask")
            if mask is not None and not _mask_is_right_padding(mask):
                return None  # a mask of the caller's own making: leave it
            kwargs["attention_mask"] = layer_masks(config, positions, dtype, mask)
            kwargs["use_cache"] = False
            return args, kwargs

        return hooked_forwards(model, self.id, pre_hook)


BOUNDARY_KEYS = ("seq_idx", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


def sample_boundaries(position_ids: torch.Tensor) -> dict:
    """What DataCollatorWithFlattening(return_seq_idx=True, return_flash_attn_kwargs=True) sends with a packed
    row, computed from its position_ids: seq_idx (the sample of each token, from 0 in each row) and the
    cumulative sample lengths over the flattened batch with the longest sample's length."""
    doc = document_ids(position_ids) - 1  # [B, T], 0-based per row
    restart = torch.ones_like(position_ids, dtype=torch.bool)  # a sample starts where its positions restart
    restart[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    starts = restart.reshape(-1).nonzero().flatten()
    ends = torch.cat([starts[1:], starts.new_tensor([position_ids.numel()])])
    cu = torch.cat([starts.new_zeros(1), ends]).to(torch.int32)
    longest = int((ends - starts).max()) if len(starts) else 0
    return {"seq_idx": doc.to(torch.int32), "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
            "max_length_q": longest, "max_length_k": longest}


class SampleBoundariesPatch:
    id = ids.PACKING_SAMPLE_BOUNDARIES
    applicability = Applicability.SAFE
    keeps_unpacked_outputs = True  # a row of one sample gets no boundaries: nothing changes for it
    summary = ("send each packed row's sample boundaries (seq_idx, cu_seq_lens_q/k) as the packing collator does "
               "with return_seq_idx and return_flash_attn_kwargs: recurrent, convolution and linear-attention "
               "layers (with their CUDA kernels) keep the samples apart")

    def applies_to(self, model) -> str | None:
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        def pre_hook(module, args, kwargs):
            positions = kwargs.get("position_ids")
            if any(kwargs.get(k) is not None for k in BOUNDARY_KEYS) or not is_packed(positions):
                return None  # the collator sent them (onboard train, TRL's padding-free collator), or one sample
            kwargs.update(sample_boundaries(positions))
            kwargs["use_cache"] = False
            return args, kwargs

        return hooked_forwards(model, self.id, pre_hook)


class UnpackedPatch:
    """Not a change of the model: the training setup's. Training pads each micro-batch on the right instead of
    packing it, which keeps samples apart on any model whose padded batch matches each sample alone."""

    id = ids.PACKING_UNPACKED
    applicability = Applicability.SAFE
    keeps_unpacked_outputs = True
    summary = ("train on right-padded micro-batches instead of packed rows: the fallback when no verified fix keeps "
               "packed samples apart (slower by the padding it adds)")

    def applies_to(self, model) -> str | None:
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        return PatchHandle(self.id)  # the collator is the change: training_collator() reads the patch list


def training_collator(patch_ids, pad_id: int, ignore_index: int = -100, position_start: int = 0):
    """The collator a training run with these patches uses: right-padded batches under packing.unpacked; packed
    rows with sample boundaries under packing.sample_boundaries; else packed rows with position_ids only. Packed
    positions restart at `position_start`, where the model numbers a sample alone (RoBERTa-style: padding_idx + 1)."""
    from transformers import DataCollatorWithFlattening

    patch_ids = set(patch_ids)
    if ids.PACKING_UNPACKED in patch_ids:
        return RightPadding(pad_id, ignore_index)
    if ids.PACKING_SAMPLE_BOUNDARIES in patch_ids:
        return DataCollatorWithFlattening(return_position_ids=True, return_seq_idx=True,
                                          return_flash_attn_kwargs=True, position_ids_start=position_start)
    return DataCollatorWithFlattening(return_position_ids=True, position_ids_start=position_start)


class RightPadding:
    """Samples ({"input_ids", "labels"}) as one right-padded batch with an attention mask; labels ignored on
    padding. What an unpacked micro-batch is."""

    def __init__(self, pad_id: int, ignore_index: int = -100):
        self.pad_id, self.ignore_index = pad_id, ignore_index

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        if any(len(s["labels"]) != len(s["input_ids"]) for s in samples):  # seq2seq: labels are the decoder's own
            return seq2seq_batch(samples, self.pad_id, self.ignore_index)
        width = max(len(s["input_ids"]) for s in samples)
        batch = {"input_ids": torch.full((len(samples), width), self.pad_id, dtype=torch.long),
                 "labels": torch.full((len(samples), width), self.ignore_index, dtype=torch.long),
                 "attention_mask": torch.zeros((len(samples), width), dtype=torch.long)}
        for i, s in enumerate(samples):
            n = len(s["input_ids"])
            batch["input_ids"][i, :n] = torch.as_tensor(s["input_ids"])
            batch["labels"][i, :n] = torch.as_tensor(s["labels"])
            batch["attention_mask"][i, :n] = 1
        return batch


def seq2seq_batch(samples: list[dict], pad_id: int, ignore_index: int = -100) -> dict[str, torch.Tensor]:
    """Encoder-decoder samples ({"input_ids", "labels"}) as one batch: the encoder's ids right-padded with a mask,
    the labels padded with the ignore index to their own width (the model builds its decoder's input from them),
    as DataCollatorForSeq2Seq pads them."""
    width = max(len(s["input_ids"]) for s in samples)
    out = max(len(s["labels"]) for s in samples)
    batch = {"input_ids": torch.full((len(samples), width), pad_id, dtype=torch.long),
             "attention_mask": torch.zeros((len(samples), width), dtype=torch.long),
             "labels": torch.full((len(samples), out), ignore_index, dtype=torch.long)}
    for i, s in enumerate(samples):
        batch["input_ids"][i, : len(s["input_ids"])] = torch.as_tensor(s["input_ids"])
        batch["attention_mask"][i, : len(s["input_ids"])] = 1
        batch["labels"][i, : len(s["labels"])] = torch.as_tensor(s["labels"])
    return batch


UNPACKED_BATCH = 8  # samples per micro-batch of `onboard train` (its --batch-size default): the fallback's cost


def unpacked_cost(lengths: list[int], batch_size: int = UNPACKED_BATCH) -> tuple[float, str]:
    """The padding fraction of unpacked training on data of these sample lengths, and the cost in words."""
    padding = padding_fraction(lengths, batch_size)
    return padding, (f"unpacked: {padding:.0%} of the tokens of right-padded micro-batches of {batch_size} samples "
                     "(data order) are padding on this data, compute that packed rows do not spend")


def padding_fraction(lengths: list[int], batch_size: int) -> float:
    """The share of a right-padded run's tokens that are padding: samples in data order, `batch_size` a batch."""
    total = padded = 0
    for start in range(0, len(lengths), batch_size):
        group = lengths[start:start + batch_size]
        total += max(group) * len(group)
        padded += max(group) * len(group) - sum(group)
    return padded / total if total else 0.0


def causal_short_convs(model) -> list[torch.nn.Conv1d]:
    """Depthwise causal convolutions over the sequence: nn.Conv1d with one group per channel and k - 1 padding,
    whose first T outputs are the causal ones (the short convolutions of Griffin, Mamba, GatedDeltaNet blocks)."""
    return [m for m in unwrap(model).modules()
            if isinstance(m, torch.nn.Conv1d) and m.groups == m.in_channels == m.out_channels
            and m.kernel_size[0] > 1 and m.padding == (m.kernel_size[0] - 1,) and m.stride == (1,)
            and m.dilation == (1,)]


class SegmentConvPatch:
    """A short causal convolution reads the k - 1 tokens before each token: in a packed row, those of the
    previous sample. This patch gives every depthwise causal nn.Conv1d of the model, on packed rows, the same
    convolution with each tap masked where it reaches into another sample (exact: the other taps are the
    layer's own weights and order). Models whose only leak is such a convolution (RecurrentGemma, whose
    recurrence resets where position_ids restart) then keep packed samples apart in torch, on any device."""

    id = ids.PACKING_SEGMENT_CONV
    applicability = Applicability.SAFE
    keeps_unpacked_outputs = True  # a row of one sample: the convolution runs as it was
    summary = ("short causal convolutions (depthwise nn.Conv1d) stop at sample starts on packed rows, in torch: "
               "no kernel package needed")

    def applies_to(self, model) -> str | None:
        return None if causal_short_convs(model) else "no depthwise causal nn.Conv1d in the model"

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        refuse_unless_applicable(self, model)
        base = unwrap(model)
        handle = PatchHandle(self.id)
        state: dict[str, torch.Tensor | None] = {"doc": None}

        def pre_hook(module, args, kwargs):
            # set on every forward (None when not packed) and kept: a checkpointed layer recomputes its
            # convolution during backward, after this forward returned, and must see the same samples
            positions = kwargs.get("position_ids")
            state["doc"] = document_ids(positions) if is_packed(positions) else None

        hook = base.register_forward_pre_hook(pre_hook, with_kwargs=True)
        handle.on_revert(hook.remove)
        for conv in causal_short_convs(base):
            original = conv.forward

            def segmented(x, conv=conv, original=original):
                out = original(x)
                doc = state["doc"]
                if doc is None or x.dim() != 3 or doc.shape != (x.shape[0], x.shape[-1]):
                    return out
                k, length = conv.kernel_size[0], x.shape[-1]
                doc = doc.to(x.device)
                acc = torch.zeros_like(x) if conv.bias is None else conv.bias[None, :, None].expand_as(x).clone()
                for shift in range(k):  # tap k-1-shift reads the token `shift` places back
                    back = torch.nn.functional.pad(x, (shift, 0))[..., :length]
                    same = torch.nn.functional.pad(doc, (shift, 0), value=-1)[..., :length] == doc
                    acc = acc + conv.weight[:, 0, k - 1 - shift][None, :, None] * back * same[:, None, :]
                return torch.cat([acc, out[..., length:]], dim=-1)

            conv.forward = segmented
            handle.on_revert(lambda conv=conv: conv.__dict__.pop("forward", None))
        return handle
