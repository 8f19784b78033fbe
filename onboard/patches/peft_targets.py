"""LoRA target patches: they rewrite the LoraConfig that LoRA is applied with, for check and train alike.

lora.wrapped_linear_targets (FM-LORA-WRAPPED): a target name that matches a custom Linear wrapper (a
module holding a single nn.Linear, e.g. Gemma4ClippableLinear) makes PEFT refuse the whole model
("not supported"). The wrapper's inner nn.Linear is what the name means: target it instead.

lora.exclude_unwrappable (FM-LORA-UNSUPPORTED): a target PEFT cannot adapt stops the whole run: PEFT refuses
Mamba's out_proj and conv1d ("incompatible with Mamba-based models"), and its LoRA Linear crashes on an
nn.Linear subclass whose forward returns a tuple (Llama 4's router). Such modules are left out of LoRA.

lora.expert_parameters (FM-LORA-EXPERTS): fused MoE experts keep their weights as 3D parameters, which no
target_modules entry reaches; PEFT's target_parameters does. This adds every expert weight to the adapter
(larger adapter, more memory), so it changes what is trained: unsafe, applied with --unsafe-fixes.

All are LoRA-config transforms (onboard.patches.base.LoraTransform): they have no apply(); they rewrite the
LoraConfig, and whoever builds LoRA (LORA001, `onboard train`, `onboard.lora_config`) builds it with the result.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from onboard.patches.base import Applicability, unwrap
from onboard.patches import ids


def _peft_layer_types() -> tuple[type, ...]:
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention, Conv1D)


def inner_linear(module: nn.Module) -> str | None:
    """The child name of a custom Linear wrapper's nn.Linear: one child, a Linear, no own parameters."""
    if isinstance(module, _peft_layer_types()):
        return None
    children = list(module.named_children())
    if len(children) != 1 or not isinstance(children[0][1], nn.Linear):
        return None
    if any(True for _ in module.parameters(recurse=False)):
        return None
    return children[0][0]


def wrapper_redirects(model, config) -> dict[str, str]:
    """Wrapper module name -> its inner Linear's name, for the wrappers `config`'s targets match."""
    from peft.tuners.tuners_utils import check_target_module_exists

    if isinstance(config.target_modules, str) and config.target_modules == "all-linear":
        return {}  # all-linear selects by type: it reaches the inner nn.Linear by itself
    out = {}
    for name, module in unwrap(model).named_modules():
        inner = inner_linear(module) if name else None
        if inner and _matches(check_target_module_exists(config, name)):
            out[name] = f"{name}.{inner}"
    return out


def _matches(hit) -> bool:
    from peft.tuners.tuners_utils import _ExcludedModule

    return bool(hit) and not isinstance(hit, _ExcludedModule)


def expert_parameters(model) -> list[str]:
    """Fused expert weights (3D parameters under an 'expert' module), as layer-relative suffixes."""
    suffixes = set()
    for name, param in unwrap(model).named_parameters():
        if param.dim() == 3 and "expert" in name.lower() and "lora_" not in name:
            parts = name.replace(".base_layer", "").split(".")
            last_index = max((i for i, p in enumerate(parts) if p.isdigit()), default=-1)
            suffixes.add(".".join(parts[last_index + 1:]))
    return sorted(suffixes)


class WrappedLinearTargetsPatch:
    id = ids.LORA_WRAPPED_LINEAR
    applicability = Applicability.SAFE
    summary = "point LoRA target names that hit custom Linear wrappers at the wrapped nn.Linear"

    def applies_to(self, model) -> str | None:
        if not any(inner_linear(m) for m in unwrap(model).modules()):
            return "the model has no custom Linear wrapper"
        return None

    def configure(self, config, model):
        from peft.tuners.tuners_utils import check_target_module_exists

        redirects = wrapper_redirects(model, config)
        if not redirects:
            return config
        names = [redirects.get(n, n) for n, m in unwrap(model).named_modules()
                 if n and _matches(check_target_module_exists(config, n)) and not _inside(n, redirects)]
        return dataclasses.replace(config, target_modules=sorted(set(names)))


def _inside(name: str, redirects: dict[str, str]) -> bool:
    """A module below a wrapper (its inner Linear is added through the redirect, not on its own)."""
    return any(name.startswith(w + ".") for w in redirects)


class ExpertParametersPatch:
    id = ids.LORA_EXPERT_PARAMETERS
    applicability = Applicability.UNSAFE
    summary = "add the fused MoE expert weights to LoRA through PEFT's target_parameters"

    def applies_to(self, model) -> str | None:
        return None if expert_parameters(model) else "the model has no fused expert parameters"

    def configure(self, config, model):
        found = expert_parameters(model)
        if not found:
            return config
        return dataclasses.replace(config, target_parameters=sorted(set(config.target_parameters or []) | set(found)))


def lora_config(model, targets, patches, r: int, alpha: int):
    """The LoraConfig onboard checks and trains with, rewritten by the given LoRA patches in order."""
    from peft import LoraConfig

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets or "all-linear", bias="none")
    for patch in patches:
        configure = getattr(patch, "configure", None)
        if configure is not None:
            config = configure(config, model)
    return config


def strip_lora(model) -> None:
    """Undo a partial LoRA injection (PEFT raising half-way leaves some layers wrapped)."""
    from peft.tuners.lora import LoraLayer

    base = unwrap(model)
    for name, module in list(base.named_modules()):
        if isinstance(module, LoraLayer) and name:
            parent_name, _, child = name.rpartition(".")
            parent = base.get_submodule(parent_name) if parent_name else base
            if getattr(parent, child, None) is module:
                setattr(parent, child, module.get_base_layer())




def unwrappable_modules(model) -> dict[str, str]:
    """Module name -> why PEFT's LoRA cannot adapt it, found by asking PEFT and by calling the module:
    names PEFT's own checks refuse for this model (Mamba's out_proj and conv1d), and nn.Linear subclasses
    whose forward does not return one tensor of out_features (Llama 4's router returns scores and logits)."""
    import torch
    from peft import LoraConfig
    from peft.tuners import tuners_utils

    base = unwrap(model)
    found: dict[str, str] = {}
    check = getattr(tuners_utils, "_check_lora_target_modules_mamba", None)
    probe_config = LoraConfig(target_modules="all-linear")
    for name, module in base.named_modules():
        if not name or "lora_" in name:
            continue
        leaf = name.rpartition(".")[2]
        if check is not None and isinstance(module, (nn.Linear, nn.Conv1d)):
            try:
                check(probe_config, base, leaf)
            except ValueError as exc:
                found[name] = f"PEFT refuses it: {str(exc).split('.')[0]}"
                continue
        if isinstance(module, nn.Linear) and type(module).forward is not nn.Linear.forward:
            weight = module.weight
            try:
                with torch.no_grad():
                    out = module(torch.zeros(1, weight.shape[1], dtype=weight.dtype, device=weight.device))
                ok = isinstance(out, torch.Tensor) and out.shape[-1] == weight.shape[0]
            except Exception:  # noqa: BLE001 - a forward that cannot take a plain input cannot be wrapped either
                ok = False
            if not ok:
                found[name] = f"{type(module).__name__}.forward does not return one tensor of its out_features"
    # all-linear targets the leaf names of the Linear layers, and PEFT matches a name by its last part: a Linear
    # inside an nn.Sequential is "0", which then also names layer 0 of every ModuleList (Qwen3-Omni's audio
    # encoder layers), and PEFT refuses those
    linear_leaves = {n.rpartition(".")[2] for n, m in base.named_modules() if isinstance(m, nn.Linear)}
    wrappable = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)
    for name, module in base.named_modules():
        leaf = name.rpartition(".")[2]
        if name and leaf in linear_leaves and not isinstance(module, wrappable) and type(module).__name__ != "Conv1D" \
                and name not in found and "lora_" not in name:
            found[name] = f"the target name {leaf!r} (a Linear's, under all-linear) also names this {type(module).__name__}"
    return found


class ExcludeUnwrappablePatch:
    id = ids.LORA_EXCLUDE_UNWRAPPABLE
    applicability = Applicability.SAFE
    summary = "leave out of LoRA the modules PEFT cannot adapt (it refuses them, or their forward is not a Linear's)"

    def applies_to(self, model) -> str | None:
        return None if unwrappable_modules(model) else "PEFT can adapt every linear module of the model"

    def configure(self, config, model):
        found = unwrappable_modules(model)
        if not found:
            return config
        # by leaf name where no wrappable Linear shares it, else by full name (PEFT matches either way)
        linear_leaves = {n.rpartition(".")[2] for n, m in unwrap(model).named_modules()
                         if isinstance(m, nn.Linear) and n not in found}
        leaves = sorted({name if name.rpartition(".")[2] in linear_leaves else name.rpartition(".")[2]
                         for name in found})
        if isinstance(config.target_modules, str) and config.target_modules != "all-linear":
            return config
        excluded = set(config.exclude_modules or []) | set(leaves)
        if isinstance(config.target_modules, (list, set, tuple)):  # named targets: drop the ones PEFT cannot take
            kept = [t for t in config.target_modules if t not in excluded]
            return dataclasses.replace(config, target_modules=kept or config.target_modules, exclude_modules=sorted(excluded))
        return dataclasses.replace(config, exclude_modules=sorted(excluded))


__all__ = ["ExcludeUnwrappablePatch", "ExpertParametersPatch", "WrappedLinearTargetsPatch", "expert_parameters",
           "inner_linear", "lora_config", "strip_lora", "unwrappable_modules", "wrapper_redirects"]
