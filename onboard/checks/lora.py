"""LORA001: PEFT LoRA wraps the model's linear layers and every adapter that should learn gets a gradient."""

from __future__ import annotations

import warnings
from collections import Counter

import torch

from onboard.checks.base import Check
from onboard.harness.forward import batch_tensors
from onboard.harness.result import Status

_GROUPS = (
    ("experts", ("expert",)),
    ("vision", ("vision", "visual", "image", "audio", "multi_modal_projector", "mm_projector")),
    ("attention", ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "qkv", "query", "key", "value")),
    ("mlp", ("mlp", "ffn", "feed_forward", "gate_proj", "up_proj", "down_proj", "fc1", "fc2", "dense_h")),
)
_OFF_TEXT_PATH = {"vision"}  # adapters there get no gradient from text-only data, and that is expected


def module_group(name: str) -> str:
    lowered = name.lower()
    for group, keys in _GROUPS:
        if any(k in lowered for k in keys):
            return group
    return "other"


class LoraCheck(Check):
    """What it does:
    Applies PEFT LoRA (rank 8, to all linear layers or to --lora-targets) and reports coverage by group
    (attention, mlp, experts, vision, other): which modules were wrapped, which were left out and why,
    the trainable parameter count and any warning PEFT raised. Then runs one forward and backward pass on
    a sample and checks that every adapter on the text path received a non-zero gradient (LoRA's B
    matrices: A gets none at initialisation, since B starts at zero).

    Why it matters:
    PEFT skips what it cannot wrap: custom Linear wrappers, fused expert weights. The adapter then trains
    a fraction of what was meant, with no error. An adapter without gradient never learns.

    Failure modes:
    FM-LORA-WRAPPED (custom Linear wrappers rejected or skipped), FM-LORA-EXPERTS (fused MoE expert
    parameters not targeted), FM-LORA-NOGRAD (adapters on the text path get no gradient).

    Fix:
    Issue "patch layer": redirect targets to the wrapped nn.Linear, and target expert parameters with
    PEFT's target_parameters. Until then the findings are reported as WARN.
    """

    code = "LORA001"
    name = "lora"
    summary = "PEFT LoRA applies; coverage by group; adapters get gradients"
    requires = ("LOAD001",)

    def run(self, session):
        from peft import LoraConfig, get_peft_model
        from peft.tuners.lora import LoraLayer

        model = session.model
        head = model.get_output_embeddings()
        targets = session.lora_targets or "all-linear"
        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets, bias="none")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                peft_model = get_peft_model(model, config)
            except (ValueError, TypeError) as exc:
                text = str(exc).splitlines()[0]
                wrapped = "not supported" in text or "Unsupported" in text
                return self.result(Status.FAIL, f"PEFT refused the model: {text}",
                                   diagnosis="FM-LORA-WRAPPED" if wrapped else None)
        peft_warnings = sorted({str(w.message).splitlines()[0] for w in caught if "peft" in (w.filename or "")})

        base = peft_model.get_base_model()
        wrapped, skipped = {}, {}
        inside_lora = set()
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer):
                wrapped[name] = module
                inside_lora.update(f"{name}.{child}" for child, _ in module.named_modules() if child)
        for name, module in base.named_modules():
            if name in wrapped or name in inside_lora or not name:
                continue
            reason = _skip_reason(module, head)
            if reason:
                skipped[name] = reason
        for name, param in base.named_parameters():
            if param.dim() == 3 and "expert" in name.lower():
                skipped[name] = "fused expert parameters: target_modules cannot reach them (FM-LORA-EXPERTS)"

        res = self.result(Status.PASS, "")
        groups = Counter(module_group(n) for n in wrapped)
        for group in ("attention", "mlp", "experts", "vision", "other"):
            res.measure(f"wrapped_{group}", groups.get(group, 0), "modules")
        res.measure("skipped", len(skipped), "modules")
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in peft_model.parameters())
        res.measure("trainable_params", trainable, "params")
        res.measure("trainable_fraction", round(trainable / total, 6), "", "> 0")
        res.evidence["skipped"] = _summarise(skipped)
        if peft_warnings:
            res.evidence["peft_warnings"] = peft_warnings

        if not wrapped:
            res.status, res.message = Status.FAIL, f"LoRA wrapped no module with targets {targets!r}"
            return res
        session.peft_model = peft_model

        no_grad = _adapters_without_gradient(peft_model, wrapped, session)
        expected_missing = [n for n in no_grad if module_group(n) in _OFF_TEXT_PATH]
        missing = [n for n in no_grad if module_group(n) not in _OFF_TEXT_PATH]
        res.measure("adapters_without_gradient", len(missing), "adapters", "0 on the text path")
        if expected_missing:
            res.evidence["no_gradient_off_text_path"] = expected_missing[:20]
        summary = (f"{len(wrapped)} modules wrapped ({', '.join(f'{g} {c}' for g, c in sorted(groups.items()))}), "
                   f"{trainable / 1e6:.2f}M trainable params")
        if missing:
            res.status, res.diagnosis = Status.FAIL, "FM-LORA-NOGRAD"
            res.message = f"{len(missing)} adapters got no gradient, e.g. {missing[0]}"
            res.evidence["no_gradient"] = missing[:20]
            return res
        wrappers = [n for n, r in skipped.items() if "wrapper" in r]
        experts = [n for n, r in skipped.items() if "FM-LORA-EXPERTS" in r]
        if wrappers or experts:
            res.status = Status.WARN
            res.diagnosis = "FM-LORA-EXPERTS" if experts else "FM-LORA-WRAPPED"
            res.message = summary + f"; not covered: {len(wrappers)} custom Linear wrappers, {len(experts)} expert tensors"
        else:
            res.message = summary
        return res


def _skip_reason(module, head) -> str | None:
    if module is head:
        return "output layer: all-linear leaves it out (it is tied to or as large as the embedding)"
    if isinstance(module, torch.nn.Linear):
        return "not matched by target_modules"
    child = getattr(module, "linear", None)
    if isinstance(child, torch.nn.Linear) and "Linear" in type(module).__name__:
        return f"custom Linear wrapper {type(module).__name__}: PEFT cannot wrap it (FM-LORA-WRAPPED)"
    return None


def _summarise(skipped: dict[str, str]) -> list[str]:
    """One line per reason, with a count and an example, instead of one line per module."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        by_reason.setdefault(reason, []).append(name)
    return [f"{len(names)} x {reason} (e.g. {names[0]})" for reason, names in by_reason.items()]


def _adapters_without_gradient(peft_model, wrapped, session) -> list[str]:
    ex = min(session.examples, key=len)
    batch = batch_tensors([ex], session.device, session.pad_id)
    peft_model.zero_grad(set_to_none=True)
    out = peft_model(**batch, use_cache=False)
    out.loss.backward()
    missing = []
    for name, module in wrapped.items():
        grads = [p.grad for n, p in module.named_parameters() if "lora_B" in n and p.requires_grad]
        if not grads or all(g is None or not torch.any(g != 0) for g in grads):
            missing.append(name)
    peft_model.zero_grad(set_to_none=True)
    return missing
