"""The layer-complete slice: the model's own class with its embeddings, final norm and head, and one or two
decoder layers of each distinct kind, carrying the loaded model's weights for exactly those layers.

Most checks test code paths (masks and positions, what LoRA wraps, the loss's normalisation, kernels, compile),
and one layer of each kind runs the same code as thirty. The slice runs those checks; the whole model runs what
needs depth (the weights, the pretrained loss, memory, the last training step). A slice is used only when it
is shown to be the same model, shorter:

- a layer's *kind* is read off the built modules, not config names: every submodule's class, its parameters'
  names and shapes, its scalar attributes (is_sliding, sliding_window, a KV-shared flag; the layer's own index
  aside), hooks and instance-level forwards, plus the config's entries for that layer (layer_types, no_rope_layers,
  membership of mlp_only_layers...);
- the slice's config is the model's, with the layer count, every per-layer list and every list of layer indices
  cut to the kept layers; the slice is built from that config by the model's class, so a config that does not
  describe those layers builds other layers, and the slice is refused;
- built, each of its layers must have the kind of the layer it stands for, the parts outside the layers must
  match the model's, every tensor must come from the model's state dict, and the hidden states after the first
  kept layers must equal the model's exactly (the same weights on the same input: a clean null).

The kept layers are the first two of each kind; if that subset fails, the shortest prefix of the model that
holds two of each kind; if that fails too (a layer index that cannot be renumbered), no slice: every check runs
on the whole model, and the report says why.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import torch
from torch import nn

# config fields that count a model's layers (the same names tiny:ARCH shrinks)
LAYER_COUNTS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers", "num_decoder_layers")
# a module's own position in the stack: not part of its kind
INDEX_ATTRS = {"layer_idx", "layer_id", "layer_index", "layer_number", "layer_num", "block_idx", "idx"}
ONBOARD_ATTRS = {"tiny_stage"}  # what onboard itself notes on a model it built: not the model's
PER_KIND = 2  # layers of each kind kept: the second runs the code paths that depend on a layer before it


@dataclass
class SliceMap:
    """Which layers a slice keeps, of which kind, and how it was shown to be the model's."""

    stack: str  # the module path of the model's layer list
    total: int  # layers of the model
    kept: list[int] = field(default_factory=list)  # model layer indices, in slice order
    kinds: list[str] = field(default_factory=list)  # kind label of each kept layer
    how: str = ""  # "two of each kind" | "prefix"
    parameters: int = 0  # the slice's parameter count
    model_parameters: int = 0
    hidden_diff: float | None = None  # max |h_slice - h_model| after the first kept layers (0: exact)
    compared_layers: int = 0

    def to_dict(self) -> dict:
        return {"stack": self.stack, "total": self.total, "kept": self.kept, "kinds": self.kinds, "how": self.how,
                "parameters": self.parameters, "model_parameters": self.model_parameters,
                "hidden_diff": self.hidden_diff, "compared_layers": self.compared_layers}

    def describe(self) -> str:
        from onboard.harness.result import layer_groups

        return (f"layers {layer_groups(self.kept, self.kinds)} of {self.total} "
                f"({self.parameters / max(self.model_parameters, 1):.1%} of the weights)")


class NoSlice(Exception):
    """No slice smaller than the model is shown to be the same model; the message says why. `whole_is_slice`: the
    slice would keep every layer (two layers of one kind), nothing was refused."""

    def __init__(self, message: str, whole_is_slice: bool = False):
        super().__init__(message)
        self.whole_is_slice = whole_is_slice


# ---- reading the model ---------------------------------------------------------------------------------------

def layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList, object]:
    """(path, the decoder's layer list, the config that counts it): the ModuleList whose length a layer count of
    the text config gives (the first count that some layer list has: BART's num_hidden_layers is its encoder's,
    its decoder_layers the decoder's). Raises NoSlice when there is none or more than one."""
    config = model.config
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    counts = [getattr(text, k) for k in LAYER_COUNTS if isinstance(getattr(text, k, None), int)]
    if not counts or max(counts) < 2:
        raise NoSlice("the text config counts no layers")
    lists = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "h", "layer", "blocks", "block")]
    towers = ("vision", "audio", "visual", "image", "speech", "mtp")  # towers beside the text model
    lists = [(n, m) for n, m in lists if not any(t in n.lower() for t in towers)]
    total = next((c for c in counts if any(len(m) == c for _, m in lists)), counts[0])
    stacks = [(n, m) for n, m in lists if len(m) == total]
    if len(stacks) > 1:  # an encoder beside the decoder (BERT-style models name their only stack "encoder")
        stacks = [(n, m) for n, m in stacks if "encoder" not in n.lower()]
    if len(stacks) != 1:
        raise NoSlice(f"{'no' if not stacks else len(stacks)} layer lists of {total} layers "
                      "(the decoder's must be the only one)")
    return stacks[0][0], stacks[0][1], text


def _scalars(module: nn.Module) -> tuple:
    return tuple(sorted((k, v) for k, v in vars(module).items()
                        if not k.startswith("_") and k not in INDEX_ATTRS and k not in ONBOARD_ATTRS and k != "training"
                        and isinstance(v, (bool, int, float, str, type(None)))))


def _hooks(hooks: dict) -> tuple:
    """The hooks someone put on a module, by name; transformers' own (its output recorders, installed on the first
    forward that asks for hidden states) are not the model's."""
    names = []
    for hook in hooks.values():
        fn = getattr(hook, "func", hook)
        module = getattr(fn, "__module__", "") or ""
        if not module.startswith(("transformers.", "torch.")):
            names.append(f"{module}.{getattr(fn, '__qualname__', type(fn).__name__)}")
    return tuple(sorted(names))


def _module_signature(module: nn.Module) -> tuple:
    parts = []
    for name, mod in module.named_modules():
        params = tuple((n, tuple(p.shape), str(p.dtype)) for n, p in mod.named_parameters(recurse=False))
        buffers = tuple((n, tuple(b.shape)) for n, b in mod.named_buffers(recurse=False))
        hooks = (_hooks(mod._forward_hooks), _hooks(mod._forward_pre_hooks), _hooks(mod._backward_hooks),
                 "forward" in mod.__dict__)
        parts.append((name, type(mod).__qualname__, params, buffers, hooks, _scalars(mod)))
    return tuple(parts)


def per_layer_keys(text_config, total: int) -> list[str]:
    """The config's fields indexed by layer: lists of one entry per layer, and lists of layer indices."""
    return [key for key, value in sorted(vars(text_config).items()) if not key.startswith("_") and (
        isinstance(value, (list, tuple)) and len(value) == total or _index_list(key, value, total))]


def _config_entries(text_config, index: int, total: int, keys: list[str]) -> tuple:
    """The config's entries for layer `index` among `keys` (per_layer_keys of the model's config): per-layer
    lists, and membership of lists of layer indices."""
    out = []
    for key in keys:
        value = getattr(text_config, key, None)
        if isinstance(value, (list, tuple)) and len(value) == total:
            entry = value[index]
            out.append((key, entry if isinstance(entry, (bool, int, float, str, type(None))) else repr(entry)))
        elif isinstance(value, (list, tuple)):
            out.append((key, index in value))
        else:
            out.append((key, repr(value)))
    return tuple(out)


def _index_list(key: str, value, total: int) -> bool:
    return ("layer" in key or key.endswith(("_idxs", "_ids", "_indices"))) and isinstance(value, (list, tuple)) \
        and len(value) != total and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < total for v in value)


def layer_kinds(model: nn.Module) -> tuple[list[tuple], list[str]]:
    """Each layer's kind (a signature) and a readable label of it."""
    _, stack, text = layer_stack(model)
    total = len(stack)
    keys = per_layer_keys(text, total)
    sigs = [(_module_signature(layer), _config_entries(text, i, total, keys)) for i, layer in enumerate(stack)]
    distinct = list(dict.fromkeys(sigs))
    labels = []
    if len(distinct) == 1:
        return sigs, [type(layer).__name__ for layer in stack]
    # what tells the kinds apart, in words: the config's per-layer entries that vary, the children whose class varies
    varying = [k for k in keys if len({dict(sig[1]).get(k) for sig in sigs}) > 1]
    children = [{n: type(c).__name__ for n, c in layer.named_children()} for layer in stack]
    differing = sorted(n for n in set().union(*children) if len({c.get(n) for c in children}) > 1)
    for i, sig in enumerate(sigs):
        entries = dict(sig[1])
        extra = [f"{k}={entries[k]}" if not isinstance(entries[k], str) or k not in ("layer_types", "layers_block_type")
                 else str(entries[k]) for k in varying]
        extra += [children[i][n] for n in differing if n in children[i]]
        if not extra:
            extra = [f"kind {distinct.index(sig) + 1}"]
        labels.append(f"{type(stack[i]).__name__} ({', '.join(dict.fromkeys(extra))})")
    return sigs, labels


# ---- building it ---------------------------------------------------------------------------------------------

def _sliced_config(model: nn.Module, kept: list[int]):
    """A copy of the model's config with the layer count, per-layer lists and layer indices cut to `kept`."""
    config = copy.deepcopy(model.config)
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    total = len(layer_stack(model)[1])
    remap = {old: new for new, old in enumerate(kept)}
    changes = {}
    for key, value in list(vars(text).items()):
        if key.startswith("_"):
            continue
        if key in LAYER_COUNTS and value == total:
            changes[key] = len(kept)
        elif isinstance(value, (list, tuple)) and len(value) == total:
            changes[key] = type(value)(value[i] for i in kept)
        elif isinstance(value, str) and len(value) == total and "pattern" in key:
            changes[key] = "".join(value[i] for i in kept)
        elif isinstance(value, dict) and value and all(int_key(k) is not None and 0 <= int_key(k) < total for k in value):
            changes[key] = {(remap[int_key(k)] if isinstance(k, int) else str(remap[int_key(k)])): v
                            for k, v in value.items() if int_key(k) in remap}
        elif _index_list(key, value, total):
            changes[key] = type(value)(remap[v] for v in value if v in remap)
    for key, value in changes.items():
        try:
            setattr(text, key, value)
        except (AttributeError, TypeError, ValueError):  # a derived field (a property of another): left to it
            pass
    return config


def int_key(key) -> int | None:
    """A layer index written as a key (5, "5", "05"), else None."""
    try:
        return int(key)
    except (TypeError, ValueError):
        return None


def _build(model: nn.Module, kept: list[int], stack_path: str, device, weights="model") -> nn.Module:
    """The slice of `model` keeping `kept`, with `weights`: "model" (copied from `model`'s state dict), "random" (its
    own: `model` has random weights and is on the meta device) or (checkpoint, from_pretrained keywords): the kept
    layers' tensors read from the checkpoint under the slice's indices, no other layer's."""
    config = _sliced_config(model, kept)
    dtype = next(model.parameters()).dtype
    if isinstance(weights, tuple):
        return _from_checkpoint(model, config, kept, stack_path, device, dtype, *weights)
    with torch.device(device):
        part = type(model)._from_config(config, dtype=dtype)
    if weights == "random":  # a model with random weights built on the meta device: the slice's own are as random
        return part.eval()
    own = model.state_dict()
    pattern = re.compile(re.escape(stack_path) + r"\.(\d+)\.")
    state = {}
    for name in part.state_dict():
        source = pattern.sub(lambda m: f"{stack_path}.{kept[int(m.group(1))]}.", name, count=1)
        if source not in own:
            raise NoSlice(f"the slice has a tensor the model does not ({name})")
        if own[source].shape != part.state_dict()[name].shape:
            raise NoSlice(f"{name}: {tuple(part.state_dict()[name].shape)} in the slice, "
                          f"{tuple(own[source].shape)} in the model")
        state[name] = own[source]
    part.load_state_dict(state, strict=True)
    part.eval()
    return part


def _from_checkpoint(model, config, kept, stack_path, device, dtype, checkpoint: str, kwargs: dict) -> nn.Module:
    """The slice built from its config on the device, its tensors read from the checkpoint's safetensors files: the
    slice's layer j from the checkpoint's layer kept[j], nothing of the other layers read. A tensor the checkpoint
    does not hold under the model's own name (a checkpoint whose names transformers converts on load) refuses the
    slice: random weights would be taken for the model's."""
    from safetensors import safe_open

    with torch.device(device):
        part = type(model)._from_config(config, dtype=dtype, **({"attn_implementation": kwargs["attn_implementation"]}
                                                                 if kwargs.get("attn_implementation") else {}))
    where = _safetensors_files(checkpoint, kwargs)
    pattern = re.compile(re.escape(stack_path) + r"\.(\d+)\.")
    by_object: dict[int, str] = {}
    loaded = set()
    handles = {}
    with torch.no_grad():
        for name, tensor in part.state_dict(keep_vars=True).items():
            source = pattern.sub(lambda m: f"{stack_path}.{kept[int(m.group(1))]}.", name, count=1)
            file = where.get(source)
            if file is None:
                if id(tensor) in by_object:  # tied to a tensor read already (the head to the embedding)
                    continue
                by_object.setdefault(id(tensor), name)
                continue
            if file not in handles:
                handles[file] = safe_open(file, framework="pt", device="cpu")
            value = handles[file].get_tensor(source)
            if tuple(value.shape) != tuple(tensor.shape):
                raise NoSlice(f"{source}: {tuple(value.shape)} in the checkpoint, {tuple(tensor.shape)} in the slice")
            tensor.copy_(value.to(tensor.dtype))
            by_object[id(tensor)] = name
            loaded.add(id(tensor))
    unread = [name for name, tensor in part.state_dict(keep_vars=True).items()
              if id(tensor) not in loaded and isinstance(tensor, nn.Parameter)]
    if unread:
        raise NoSlice(f"the checkpoint holds no tensor named as the model's {unread[0]} (and {len(unread) - 1} more): "
                      "its names are converted on load")
    return part.eval()


def _safetensors_files(checkpoint: str, kwargs: dict) -> dict[str, str]:
    """Tensor name -> the safetensors file of `checkpoint` (a folder or a hub id in the local cache) holding it."""
    import glob
    import json
    import os

    from safetensors import safe_open

    if os.path.isdir(checkpoint):
        files = sorted(glob.glob(os.path.join(checkpoint, "*.safetensors")))
    else:
        from transformers.utils import cached_file

        revision = kwargs.get("revision")
        index = cached_file(checkpoint, "model.safetensors.index.json", revision=revision,
                            _raise_exceptions_for_missing_entries=False)
        if index:
            names = sorted(set(json.loads(open(index).read())["weight_map"].values()))
            files = [cached_file(checkpoint, n, revision=revision) for n in names]
        else:
            files = [cached_file(checkpoint, "model.safetensors", revision=revision)]
    if not files:
        raise NoSlice(f"no safetensors file in {checkpoint}")
    where = {}
    for file in files:
        with safe_open(file, framework="pt", device="cpu") as handle:
            for key in handle.keys():
                where[key] = file
    return where


def _matches(model: nn.Module, part: nn.Module, kept: list[int], sigs: list[tuple]) -> str | None:
    """Why the slice is not the model's layers (None: it is)."""
    _, stack, text = layer_stack(model)
    keys = per_layer_keys(text, len(stack))
    try:
        _, part_stack, part_text = layer_stack(part)
    except NoSlice as exc:
        return str(exc)
    if len(part_stack) != len(kept):
        return f"the slice built {len(part_stack)} layers, not {len(kept)}"
    for j, i in enumerate(kept):
        got = (_module_signature(part_stack[j]), _config_entries(part_text, j, len(kept), keys))
        if got != sigs[i]:
            return f"slice layer {j} is not of the kind of layer {i}"
    outside = lambda m, s: [p for p in _module_signature(m) if not p[0].startswith(s + ".")]  # noqa: E731
    if outside(model, layer_stack(model)[0]) != outside(part, layer_stack(part)[0]):
        return "the modules outside the layers differ from the model's"
    return None


@torch.no_grad()
def _hidden_diff(model: nn.Module, part: nn.Module, kept: list[int], input_ids: torch.Tensor) -> tuple[float, int]:
    """Max |difference| of the hidden states the slice and the model give after the kept layers that are the
    model's first ones (0, 1, ... in order), and how many were compared: the same weights on the same input."""
    prefix = 0
    while prefix < len(kept) and kept[prefix] == prefix:
        prefix += 1
    compare = min(prefix, len(kept) - 1)  # the last hidden state may come out of the final norm
    if compare == 0:
        return 0.0, 0
    kwargs = dict(input_ids=input_ids, output_hidden_states=True, use_cache=False)
    whole = model(**kwargs).hidden_states
    sliced = part(**kwargs).hidden_states
    diff = max(float((whole[k].float() - sliced[k].float()).abs().max()) for k in range(compare + 1))
    return diff, compare


def build_slice(model: nn.Module, input_ids: torch.Tensor, device, weights="model") -> tuple[nn.Module, SliceMap]:
    """The layer-complete slice of `model` and its map; NoSlice says why there is none smaller than the model.
    `weights` (see _build): "model" copies them from `model`; with "random" or a checkpoint `model` is on the meta
    device (not loaded) and the slice cannot be compared with it (hidden_diff None)."""
    stack_path, stack, _ = layer_stack(model)
    total = len(stack)
    sigs, labels = layer_kinds(model)
    firsts: dict[tuple, list[int]] = {}
    for i, sig in enumerate(sigs):
        firsts.setdefault(sig, [])
        if len(firsts[sig]) < PER_KIND:
            firsts[sig].append(i)
    subset = sorted(i for idx in firsts.values() for i in idx)
    prefix = list(range(subset[-1] + 1))
    reasons = []
    for how, kept in (("two of each kind", subset), ("prefix", prefix)):
        if len(kept) >= total:
            reasons.append(f"{how}: keeps every layer")
            continue
        try:
            part = _build(model, kept, stack_path, device, weights)
        except NoSlice as exc:
            reasons.append(f"{how}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - a config the class refuses: try the next, say why
            reasons.append(f"{how}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        why = _matches(model, part, kept, sigs)
        diff, compared = None, 0
        if why is None and weights == "model":
            try:
                diff, compared = _hidden_diff(model, part, kept, input_ids)
            except Exception as exc:  # noqa: BLE001
                why = f"its forward failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            else:
                if diff != 0.0:
                    why = f"its hidden states after layer {compared - 1} differ from the model's by {diff:.3g}"
        if why is not None:
            reasons.append(f"{how}: {why}")
            del part
            continue
        info = SliceMap(stack=stack_path, total=total, kept=kept, kinds=[labels[i] for i in kept], how=how,
                        parameters=sum(p.numel() for p in part.parameters()),
                        model_parameters=sum(p.numel() for p in model.parameters()),
                        hidden_diff=diff, compared_layers=compared)
        return part, info
    raise NoSlice("; ".join(reasons), whole_is_slice=len(subset) >= total)
