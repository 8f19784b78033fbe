"""speed.*: levers that make a training step faster without changing its math, each verified by KERN001.

speed.compiled_layers: regional torch.compile, each repeated block (decoder layer) compiled on its own
(nn.Module.compile; the layers share one code object, so one compilation serves them all, and a new row length
recompiles once with dynamic shapes). Measured on an H200 (Llama-3-8B shape, one packed row of 6,493 tokens,
forward and backward, with speed.packed_attention): 691 -> 460 ms per step, peak memory 84 -> 66 GiB; Inductor
fuses the elementwise work around the matmuls (the fp32 adapters' casts, RMSNorm, SwiGLU, RoPE). CUDA only:
on a CPU the compilation costs more than a check-sized run saves.

speed.packed_attention: attention for packed rows that runs each sample on its own, through transformers'
attention interface (registered under "onboard_packed", selected with set_attn_implementation; no model
class is edited). transformers' sdpa path isolates the samples of a packed row with a dense block-diagonal
T x T mask, so sdpa computes, then discards, every score across samples (measured on an H200 at the
Llama-3-8B attention shape, one 11.6k-token row of 12 samples, forward and backward: 35.2 ms with the mask,
7.7 ms one causal call per sample). Here the samples' bounds come from the position_ids the packing
collator gives (a position that does not follow the one before starts a sample), as transformers' own
packed-sequence detection reads them. On CUDA in bf16/fp16, torch's varlen attention runs the whole row in
one kernel (torch.nn.attention.varlen, where the installed torch has it); elsewhere each sample is one
causal scaled_dot_product_attention call. Batches with padding (a 2D attention mask) and explicit 4D masks
take the plain sdpa path, and so does a row whose model does not pass position_ids on to its attention
function (stock Llama 4): it then attends across the whole row, which KERN001 catches (FM-KERN-MATH) before
training may use the lever. What the function cannot compute exactly (attention sinks, logit softcapping,
dropout) raises, so KERN001 reports the lever as not applicable rather than trains with other math.

speed.bf16_adapters: the LoRA adapters compute in the model's bf16/fp16, their weights kept in fp32 for the
optimizer. PEFT keeps the adapters of a bf16 model in fp32 and casts each adapted layer's input up to fp32 before
the adapter (LoraLayer's cast_input_dtype_enabled): a full fp32 copy of the activation for each of a decoder
layer's seven adapted projections, which the Trainer's autocast then casts back to bf16 for the matmul, and
whose bf16 copy autograd saves for backward. With the lever the input stays in the model's dtype (PEFT's own
switch off) and each adapter matrix is cast to it inside the matmul: the gradient still reaches the fp32 weight.
The adapters' matmuls then round as the base layer's do; KERN001 judges that against the fp32 run by its bf16
rule. Measured on an H200 (step_profile, Llama-3-8B shape, one 6,493-token row, no autocast): 691 -> 565 ms.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from onboard.patches import ids
from onboard.patches.base import Applicability, PatchContext, PatchHandle, refuse_unless_applicable, unwrap

PACKED_ATTENTION = "onboard_packed"


def sample_bounds(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """[start, end) of each sample of each row: a sample starts where a position is not the previous one + 1."""
    rows = []
    for row in position_ids.tolist():
        starts = [0] + [t for t in range(1, len(row)) if row[t] != row[t - 1] + 1]
        rows.append(list(zip(starts, starts[1:] + [len(row)])))
    return rows


_last: list = [None, None, None]  # (position_ids, its version, its bounds): one forward's layers share them


def _bounds_once(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """sample_bounds, computed once per forward: every layer gets the same position_ids tensor, and reading it
    on the host waits for the GPU, once per layer otherwise. The tensor itself is kept, so no other tensor can
    take its id while it is remembered; an in-place change bumps its version."""
    if _last[0] is position_ids and _last[1] == position_ids._version:
        return _last[2]
    flat = position_ids
    if flat.dim() == 3:  # multimodal rope (sections, batch, tokens): text tokens have one position in every section
        if not bool((flat == flat[:1]).all()):
            raise NotImplementedError(f"{PACKED_ATTENTION}: multimodal positions differ between rope sections")
        flat = flat[0]
    bounds = sample_bounds(flat)
    _last[:] = [position_ids, position_ids._version, bounds]
    return bounds


def _expand_kv(key: torch.Tensor, value: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    groups = heads // key.shape[1]
    if groups == 1:
        return key, value
    return key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)


def _window_mask(length: int, window: int | None, device) -> torch.Tensor | None:
    """Causal mask with a sliding window (a key further back than `window` positions is not seen), or None
    when the window covers the whole sample and is_causal does the same."""
    if not window or length <= window:
        return None
    q = torch.arange(length, device=device)[:, None]
    k = torch.arange(length, device=device)[None, :]
    return (k <= q) & (q - k < window)


def _varlen():
    """torch's varlen attention and how to ask it for causal attention (its signature changed between
    releases: an is_causal flag, later a window_size), or None where this torch has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    if "is_causal" in params:
        return varlen_attn, {"is_causal": True}
    if "window_size" in params:
        return varlen_attn, {"window_size": (-1, 0)}
    return None


def _per_sample(query, key, value, bounds, scaling, window) -> torch.Tensor:
    """query [B, H, T, D] -> output [B, T, H, D], each sample attending causally within itself."""
    key, value = _expand_kv(key, value, query.shape[1])
    out = torch.empty_like(query)
    for b, row in enumerate(bounds):
        for start, end in row:
            mask = _window_mask(end - start, window, query.device)
            out[b, :, start:end] = F.scaled_dot_product_attention(
                query[b:b + 1, :, start:end], key[b:b + 1, :, start:end], value[b:b + 1, :, start:end],
                attn_mask=mask, is_causal=mask is None, scale=scaling)[0]
    return out.transpose(1, 2)


def _varlen_row(query, key, value, bounds, scaling, varlen) -> torch.Tensor:
    """The whole batch as one varlen call: rows laid end to end, every sample its own sequence."""
    fn, causal = varlen
    batch, heads, length, dim = query.shape
    key, value = _expand_kv(key, value, heads)
    flat = [t.transpose(1, 2).reshape(batch * length, heads, dim) for t in (query, key, value)]
    starts = [b * length + s for b, row in enumerate(bounds) for s, _ in row] + [batch * length]
    cu = torch.tensor(starts, dtype=torch.int32, device=query.device)
    longest = max(e - s for row in bounds for s, e in row)
    out = fn(*flat, cu, cu, longest, longest, scale=scaling, **causal)
    return out.view(batch, length, heads, dim)


def attention_path(device: torch.device, dtype: torch.dtype) -> str:
    """Which computation packed rows get here: one varlen kernel, or a causal sdpa call per sample."""
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16) and _varlen() is not None:
        return "torch varlen_attn"
    return "sdpa per sample"


@torch.compiler.disable  # runs eagerly inside a compiled layer: it reads sample bounds on the host
def packed_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """An attention function for transformers' AttentionInterface. Packed rows (no mask, position_ids that
    restart) run per sample; anything with a mask runs transformers' sdpa."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    for name in ("s_aux", "sinks", "softcap"):
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"{PACKED_ATTENTION} does not compute attention with {name}")
    if dropout and module.training:
        raise NotImplementedError(f"{PACKED_ATTENTION} does not apply attention dropout")
    position_ids = kwargs.get("position_ids")
    if attention_mask is not None or position_ids is None or not getattr(module, "is_causal", True):
        if attention_mask is not None and attention_mask.dim() == 2:  # padding only: causal and padding, for sdpa
            length = query.shape[2]
            causal = torch.ones(length, length, dtype=torch.bool, device=query.device).tril()
            attention_mask = causal[None, None] & attention_mask[:, None, None, -length:].bool()
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    bounds = _bounds_once(position_ids)
    if len(bounds) != query.shape[0]:  # position_ids given for one row, shared by the batch
        bounds = bounds[:1] * query.shape[0]
    if bounds[0][-1][1] != query.shape[2]:
        raise NotImplementedError(f"{PACKED_ATTENTION}: position_ids cover {bounds[0][-1][1]} positions, the "
                                  f"queries {query.shape[2]} (a cache or a prefix)")
    window = kwargs.get("sliding_window")
    varlen = _varlen() if query.is_cuda and query.dtype in (torch.bfloat16, torch.float16) and not window else None
    if varlen is not None:
        return _varlen_row(query, key, value, bounds, scaling, varlen), None
    return _per_sample(query, key, value, bounds, scaling, window), None


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)


class PackedAttentionPatch:
    id = ids.SPEED_PACKED_ATTENTION
    applicability = Applicability.SAFE
    summary = "packed rows attend per sample (torch varlen on CUDA, else one causal sdpa per sample), no dense T x T mask"
    keeps_unpacked_outputs = False

    def describe(self, model) -> str:
        base = unwrap(model)
        return attention_path(base.device, base.dtype)

    def applies_to(self, model) -> str | None:
        base = unwrap(model)
        if not getattr(base, "_supports_attention_backend", False):
            return (f"{type(base).__name__} does not declare _supports_attention_backend, the flag transformers reads "
                    "(is_backend_compatible) before it runs a registered attention function")
        if not hasattr(base, "set_attn_implementation"):
            return f"{type(base).__name__} cannot switch attention implementation"
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        refuse_unless_applicable(self, model)
        register()
        base = unwrap(model)
        # every sub-model's own backend, put back as it was on revert (set_attn_implementation would re-check
        # each, and a vision tower that never took sdpa refuses it: Apertus 1.5)
        before = {id(m.config): (m.config, m.config._attn_implementation) for m in base.modules()
                  if hasattr(m, "set_attn_implementation") and getattr(m, "config", None) is not None}
        base.set_attn_implementation(PACKED_ATTENTION)
        handle = PatchHandle(self.id)

        def restore():
            for config, backend in before.values():
                config._attn_implementation = backend

        handle.on_revert(restore)
        return handle


def repeated_blocks(model) -> list[torch.nn.Module]:
    """The model's repeated blocks: the children of its longest ModuleList whose members are all of one class
    (the decoder layers), found in the module tree rather than by attribute name."""
    best: list[torch.nn.Module] = []
    for module in unwrap(model).modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best) and len(module) > 1:
            if len({type(m) for m in module}) == 1:
                best = list(module)
    return best


class CompiledLayersPatch:
    id = ids.SPEED_COMPILED_LAYERS
    applicability = Applicability.SAFE
    summary = "torch.compile each decoder layer on its own (regional compilation), CUDA only"
    keeps_unpacked_outputs = False

    def __init__(self, devices: tuple[str, ...] = ("cuda",), backend: str = "inductor"):
        self.devices, self.backend = devices, backend

    def describe(self, model) -> str:
        blocks = repeated_blocks(model)
        return f"{len(blocks)} x {type(blocks[0]).__name__}" if blocks else "no repeated blocks"

    def applies_to(self, model) -> str | None:
        device = unwrap(model).device.type
        if device not in self.devices:
            return f"compiled on {', '.join(self.devices)} only: on {device} the compilation costs more than it saves"
        if not repeated_blocks(model):
            return "no repeated block (a ModuleList of one class) to compile"
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        refuse_unless_applicable(self, model)
        handle = PatchHandle(self.id)
        for block in repeated_blocks(model):
            block.compile(backend=self.backend)
            handle.on_revert(lambda block=block: setattr(block, "_compiled_call_impl", None))
        return handle


def _adapter_linears(model):
    """(LoRA layer, its adapter Linear modules) for every PEFT LoRA layer whose adapters are nn.Linear."""
    for module in unwrap(model).modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if isinstance(lora_a, torch.nn.ModuleDict) and isinstance(lora_b, torch.nn.ModuleDict) and \
                hasattr(module, "cast_input_dtype_enabled"):
            linears = [m for m in (*lora_a.values(), *lora_b.values()) if type(m) is torch.nn.Linear]
            if linears:
                yield module, linears


def _in_input_dtype(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    weight = linear.weight if linear.weight.dtype == x.dtype else linear.weight.to(x.dtype)
    bias = None if linear.bias is None else linear.bias.to(x.dtype)
    return F.linear(x, weight, bias)


class Bf16AdaptersPatch:
    id = ids.SPEED_BF16_ADAPTERS
    applicability = Applicability.SAFE
    summary = "the LoRA adapters compute in the model's bf16/fp16 (weights kept fp32): no fp32 copy of each adapted input"
    keeps_unpacked_outputs = False  # the adapters' rounding changes the logits

    def describe(self, model) -> str:
        return f"{sum(1 for _ in _adapter_linears(model))} adapted layers in {unwrap(model).dtype}"

    def applies_to(self, model) -> str | None:
        dtype = unwrap(model).dtype
        if dtype not in (torch.bfloat16, torch.float16):
            return f"the model computes in {str(dtype).removeprefix('torch.')}: its adapters already do"
        if not any(True for _ in _adapter_linears(model)):
            return "no LoRA adapter with Linear matrices (LoRA is applied before this lever)"
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        refuse_unless_applicable(self, model)
        handle = PatchHandle(self.id)
        for layer, linears in _adapter_linears(model):
            before = layer.cast_input_dtype_enabled
            layer.cast_input_dtype_enabled = False
            handle.on_revert(lambda layer=layer, before=before: setattr(layer, "cast_input_dtype_enabled", before))
            for linear in linears:
                linear.forward = lambda x, linear=linear: _in_input_dtype(linear, x)
                handle.on_revert(lambda linear=linear: linear.__dict__.pop("forward", None))
        return handle
