"""The Python API: check a model, then train it with your own trainer and exactly the fixes the check verified.

    import onboard

    report = onboard.check("smollm2", device="cpu")           # the checklist, as `onboard check` runs it
    peft_config = onboard.lora_config(report, model)          # LoRA as the checks built it (rank, targets, fixes)
    trainer = SFTTrainer(model=model, peft_config=peft_config, ...)
    with onboard.apply_patches(trainer, report):              # the verified model patches, reverted on exit
        trainer.train()

A report whose packing fix is the unpacked fallback (packing.unpacked) trains on right-padded batches: pass
`onboard.collator(report, tokenizer)` as the data collator (packed rows, with sample boundaries where
packing.sample_boundaries was verified, otherwise), and leave TRL's packing and padding_free off.

`apply_patches` refuses a report on another model (class, model type, parameter count) or another setup (LoRA
rank and alpha, dtype, gradient checkpointing, max_length where the trainer has one), naming what differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from onboard.harness.errors import BadInput
from onboard.harness.result import RunReport


class SetupMismatch(BadInput):
    """The model or trainer is not the one the report checked."""


def check(model: str | None = None, *, config: str | Path | None = None,
          progress: Callable[[str], None] = lambda _: None, **setup: Any) -> RunReport:
    """Load `model` once and run the checklist. `setup` takes the fields of onboard.harness.setup.Setup
    (device, dtype, attn, lora_targets, lora_rank, lora_alpha, data, max_length, gradient_checkpointing, ...);
    a config file's (onboard.toml, pyproject [tool.onboard], axolotl .yml) values apply where not given."""
    from onboard.checks import CHECKS
    from onboard.config import load_config
    from onboard.harness.runner import run_checks
    from onboard.harness.session import ModelSession
    from onboard.harness.setup import Setup

    cfg = load_config(Path(config)) if config else None
    options = {**(cfg.setup_options() if cfg else {}), **{k: v for k, v in setup.items() if v is not None}}
    if model is not None:
        options["model"] = model
    built = Setup.build("onboard.check()", **options)
    session = ModelSession(built, thresholds_source=str(cfg.path) if cfg else "", progress=progress)
    report = run_checks(session, CHECKS)
    report.config = cfg.describe() if cfg else None
    return report


def lora_config(report: RunReport, model):
    """The peft LoraConfig the report's checks built LoRA with: the setup's rank, alpha and targets, rewritten
    by the verified LoRA-config fixes (e.g. lora.exclude_unwrappable). Pass it to get_peft_model or a trainer's
    peft_config."""
    from onboard.patches import get_patch, is_lora_transform
    from onboard.patches import lora_config as build
    from onboard.patches.base import unwrap

    _same_model(report, model)
    targets = report.options.get("lora_targets", "all-linear")
    transforms = [p for p in map(get_patch, report.verified_patches) if is_lora_transform(p)]
    return build(unwrap(model), None if targets == "all-linear" else list(targets), transforms,
                 r=report.options["lora_rank"], alpha=report.options["lora_alpha"])


def collator(report: RunReport, tokenizer):
    """The data collator the report's verified patches train with: right-padded batches under packing.unpacked
    (packed samples could not be kept apart), packed rows with seq_idx and cu_seq_lens under
    packing.sample_boundaries, else packed rows with position_ids (DataCollatorWithFlattening), each sample's
    positions from where the checks measured the model numbers them (RoBERTa-style embeddings: padding_idx + 1)."""
    from onboard.patches import training_collator

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return training_collator(report.verified_patches, pad, position_start=report.model.get("position_start") or 0)


@dataclass
class AppliedPatches:
    """What apply_patches did; revert() (or leaving the `with` block) takes the model patches back."""

    applied: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    _handles: list = field(default_factory=list, repr=False)

    def revert(self) -> None:
        while self._handles:
            self._handles.pop().revert()

    def __enter__(self) -> AppliedPatches:
        return self

    def __exit__(self, *exc) -> None:
        self.revert()


def apply_patches(target, report: RunReport, *, cce: str = "auto") -> AppliedPatches:
    """Apply the report's verified patches to `target`: a transformers model, a PEFT model, or a Trainer (HF or
    TRL; its model). LoRA-config fixes are checked, not applied: a LoRA-wrapped model must have been built with
    `lora_config(report, model)`. The fused loss (cce.fused_loss) is applied on CUDA only unless cce="on", as
    `onboard train` does. Refuses a report on another model or setup (SetupMismatch)."""
    from onboard.patches import PatchContext, get_patch, is_lora_transform
    from onboard.train.policy import changed_checks, left_out_by_training

    model, args = _model_and_args(target)
    if report.verdict.value == "NOT_READY":
        raise SetupMismatch("the report's verdict is NOT_READY: no set of patches makes this model train correctly")
    if report.verdict.value == "NOT_APPLICABLE":
        raise SetupMismatch("the report's verdict is NOT_APPLICABLE: the model needs "
                            + "; ".join(c.needs for c in report.checks if c.needs))
    changed = changed_checks(report)
    if changed:
        raise SetupMismatch(f"the report was made by checks that have changed since ({'; '.join(changed)}): run "
                            "onboard.check again")
    _same_model(report, model)
    _same_setup(report, model, args)
    patches = [get_patch(p) for p in report.verified_patches]
    device = next(model.parameters()).device
    context = PatchContext(options=report.patch_options, probe_batch=lambda: _probe_batch(model, device))
    left_out = left_out_by_training(report.verified_patches, device, cce)  # as onboard train leaves them out
    result = AppliedPatches(applied=[])
    for patch in patches:
        if is_lora_transform(patch):
            result.skipped[patch.id] = "a LoRA-config fix: in the model's LoraConfig (onboard.lora_config)"
            continue
        if patch.id in left_out:
            result.skipped[patch.id] = left_out[patch.id]
            continue
        try:
            result._handles.append(patch.apply(model, context))
        except Exception:
            result.revert()
            raise
        result.applied.append(patch.id)
    return result


# ---- what makes a report this model's and this setup's ---------------------------------------------


def _model_and_args(target):
    model = getattr(target, "model", None) if hasattr(target, "args") and hasattr(target, "train") else None
    if model is not None:
        return model, target.args
    if isinstance(target, torch.nn.Module):
        return target, None
    raise BadInput(f"apply_patches takes a model or a Trainer, not {type(target).__name__}")


def _same_model(report: RunReport, model) -> None:
    from onboard.patches.base import unwrap

    base = unwrap(model)
    checked = report.model
    now = {"class": type(base).__name__, "model_type": base.config.model_type,
           "parameters": sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)}
    differ = [f"{k} {checked[k]!r} checked, {v!r} here" for k, v in now.items()
              if checked.get(k) is not None and checked[k] != v]
    if differ:
        raise SetupMismatch(f"the report is on another model ({checked.get('id')}): " + "; ".join(differ))


def _same_setup(report: RunReport, model, args) -> None:
    from onboard.patches import ids

    options = report.options
    differ = []
    floating = {str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.is_floating_point()}
    if options.get("dtype") and options["dtype"] not in floating:
        differ.append(f"dtype {options['dtype']!r} checked, {', '.join(sorted(floating))!r} here")
    peft_config = getattr(model, "peft_config", {}).get("default")
    if peft_config is not None:
        for name, key in (("lora_rank", "r"), ("lora_alpha", "lora_alpha")):
            if options.get(name) is not None and getattr(peft_config, key) != options[name]:
                differ.append(f"{name} {options[name]!r} checked, {getattr(peft_config, key)!r} here")
        checked = lora_config(report, model)
        built_by_peft = _as_peft_builds(checked, model)  # get_peft_model's own rewrite (fused experts), if any
        # where PEFT rewrote the targets, which modules it adapts is PEFT's doing on any adapter built from this
        # config: the target_parameters are compared below, the modules only where PEFT left the names alone
        rewritten = built_by_peft.target_modules != checked.target_modules
        wanted, built = (None if rewritten else _selected(checked, model)), _wrapped(model)
        if wanted is not None and wanted != built:
            missing, extra = sorted(wanted - built), sorted(built - wanted)
            differ.append("LoRA modules differ from the checked ones (build the adapter with onboard.lora_config): "
                          + ", ".join(f"{len(names)} {what}, e.g. {names[0]}" for what, names in
                                      (("not adapted here", missing), ("adapted only here", extra)) if names))
        checked = built_by_peft
        if sorted(peft_config.target_parameters or []) != sorted(checked.target_parameters or []):
            differ.append(f"LoRA target_parameters {checked.target_parameters!r} checked, "
                          f"{peft_config.target_parameters!r} here")
    if args is not None:
        from onboard.harness.training import checkpointing_on

        ckpt = checkpointing_on(args)  # activation_checkpointing from transformers 5.24, gradient_checkpointing before
        if options.get("gradient_checkpointing") is not None and ckpt != options["gradient_checkpointing"]:
            differ.append(f"gradient_checkpointing {options['gradient_checkpointing']!r} checked, {ckpt!r} here")
        if ids.PACKING_UNPACKED in report.verified_patches:
            packs = [name for name in ("packing", "padding_free") if getattr(args, name, False)]
            if packs:
                differ.append(f"{' and '.join(packs)} on, but packed samples are not kept apart on this model: the "
                              "report verified unpacked training (packing.unpacked; use onboard.collator(report, "
                              "tokenizer))")
        max_length = getattr(args, "max_length", None)  # TRL's SFTConfig truncates to it
        if max_length is not None and options.get("max_length") is not None and max_length != options["max_length"]:
            differ.append(f"max_length {options['max_length']!r} checked, {max_length!r} here")
    if differ:
        raise SetupMismatch("the report checked another setup: " + "; ".join(differ))


def _as_peft_builds(config, model):
    """`config` as get_peft_model rewrites it for this model before building: PEFT 0.21 turns the v4 expert
    target names of a fused-MoE model (Qwen3-MoE, Mixtral, ...) into target_parameters in place, so a model
    built from onboard.lora_config carries more target_parameters than the config it was given."""
    import copy

    from onboard.patches.base import unwrap

    try:
        from peft.utils.transformers_weight_conversion import _convert_peft_config_moe
    except ImportError:  # a PEFT without the conversion builds what the config says
        return config
    config = copy.deepcopy(config)
    _convert_peft_config_moe(config, unwrap(model))
    if not config.target_parameters:
        config.target_parameters = None
    return config


def _wrapped(model) -> set[str]:
    """The modules LoRA wraps through target_modules (a parameter wrapper of target_parameters, and the modules
    under it, are target_parameters' and compared as such)."""
    from peft.tuners.lora import LoraLayer

    from onboard.patches.base import unwrap

    try:
        from peft.tuners.lora.layer import ParamWrapper
    except ImportError:
        ParamWrapper = ()  # noqa: N806
    found = {name for name, m in unwrap(model).named_modules() if isinstance(m, LoraLayer) and name}
    params = [name for name, m in unwrap(model).named_modules() if ParamWrapper and isinstance(m, ParamWrapper)]
    return {n for n in found if not any(n == p or n.startswith(p + ".") for p in params)}


def _selected(config, model) -> set[str] | None:
    """The modules `config` adapts on this model, as PEFT matches names (all-linear resolved by PEFT)."""
    import copy

    from peft.tuners.lora import LoraLayer

    from onboard.patches.base import unwrap

    try:
        from peft.tuners.tuners_utils import (_ExcludedModule, _maybe_include_all_linear_layers,
                                              check_target_module_exists)
    except ImportError:  # another PEFT: the rank and alpha are still compared
        return None
    base = unwrap(model)
    config = copy.deepcopy(config)
    if config.target_modules == "all-linear":
        config = _maybe_include_all_linear_layers(config, base)
    inner = {f"{n}.{c}" for n, m in base.named_modules() if isinstance(m, LoraLayer) for c, _ in m.named_modules()}
    found = set()
    for name, _ in base.named_modules():
        if not name or name in inner or "lora_" in name:
            continue
        hit = check_target_module_exists(config, name)
        if hit and not isinstance(hit, _ExcludedModule):
            found.add(name)
    return found


def _probe_batch(model, device) -> dict[str, torch.Tensor]:
    """A small labelled batch for patches that run the model to find what to do, where no session has data."""
    from onboard.patches.base import unwrap

    vocab = unwrap(model).config.get_text_config().vocab_size
    ids = (torch.arange(16, device=device) * 7919 % max(2, vocab - 1) + 1).unsqueeze(0)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


__all__ = ["AppliedPatches", "SetupMismatch", "apply_patches", "check", "collator", "lora_config"]
