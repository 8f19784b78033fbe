"""inputs.token_type_ids: give a forward the all-zero type ids it requires in training (FM-INPUT-EXTRA).

Some multimodal classes refuse a training forward without `token_type_ids` or `mm_token_type_ids`, which
text-only collators never produce ("`token_type_ids` is required as a model input when training"). Zeros
mean "text token" for all of them. What a forward requires is found by calling it in train mode on a
probe batch and reading which of its own parameters the error names, not from a list of model names.
"""

from __future__ import annotations

import inspect

import torch

from onboard.patches.base import Applicability, PatchContext, PatchHandle, refuse_unless_applicable, unwrap
from onboard.patches import ids


def required_inputs(model, batch: dict[str, torch.Tensor], rounds: int = 3) -> list[str]:
    """Forward parameters (…_ids) a training forward on `batch` fails without, found by calling it."""
    base = unwrap(model)
    params = [n for n in inspect.signature(base.forward).parameters if n.endswith("_ids") and n not in batch]
    added: dict[str, torch.Tensor] = {}
    was_training = base.training
    base.train()
    try:
        for _ in range(rounds):
            try:
                with torch.no_grad():
                    model(**batch, **added)
                return list(added)
            except (ValueError, TypeError, RuntimeError) as exc:
                named = [n for n in params if n in str(exc) and n not in added]
                if not named:
                    raise
                for name in named:
                    added[name] = torch.zeros_like(batch["input_ids"])
        return list(added)
    finally:
        base.train(was_training)


class ExtraInputsPatch:
    id = ids.INPUTS_TOKEN_TYPE_IDS
    applicability = Applicability.SAFE
    summary = "inject all-zero token_type_ids / mm_token_type_ids when a training forward requires them"

    def applies_to(self, model) -> str | None:
        params = inspect.signature(unwrap(model).forward).parameters
        if not any(n.endswith("type_ids") for n in params):
            return f"{type(unwrap(model)).__name__}.forward takes no type ids"
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        """`context.probe_batch` gives a labelled text batch to find the required inputs with."""
        refuse_unless_applicable(self, model)
        if context is None or context.probe_batch is None:
            raise ValueError(f"{self.id} needs a probe batch to find the required inputs")
        names = required_inputs(model, context.probe_batch())
        if not names:
            raise ValueError("a training forward on text-only data runs without extra inputs: nothing to inject")
        handle = PatchHandle(self.id)
        handle.injected = names

        def pre_hook(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                return None
            for name in names:
                if kwargs.get(name) is None:
                    kwargs[name] = torch.zeros_like(ids)
            return args, kwargs

        hook = unwrap(model).register_forward_pre_hook(pre_hook, with_kwargs=True)
        handle.on_revert(hook.remove)
        return handle
