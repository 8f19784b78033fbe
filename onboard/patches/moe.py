"""moe.experts_implementation: run a mixture-of-experts model's fused experts through the implementation MOE001
verified (the loss and adapter gradients of `eager`, every routed expert's adapter learning) and found fastest.

transformers 5 dispatches the experts of a model whose experts class carries `@use_experts_implementation`
through its experts interface (`config._experts_implementation`: eager, batched_mm, grouped_mm, and kernels
that need a library: deepgemm, sonicmoe). A model loads with grouped_mm where torch has it. The patch switches
with the model's own `set_experts_implementation` and puts the old choice back on revert; no class is edited.
Which implementation is a choice MOE001 makes on the model and records in the report (`patch_options`), so
`onboard train` and `onboard.apply_patches` apply the one the check verified.
"""

from __future__ import annotations

from onboard.patches import ids
from onboard.patches.base import Applicability, PatchContext, PatchHandle, refuse_unless_applicable, unwrap


def experts_modules(model) -> list:
    """(name, module) of each fused experts module whose forward transformers dispatches through its experts
    interface (the class carries use_experts_implementation: its instances get `is_concatenated`, transformers
    5.17 to 5.24, and its forward wraps the class's own)."""
    return [(n, m) for n, m in unwrap(model).named_modules()
            if hasattr(m, "is_concatenated") and hasattr(type(m).forward, "__wrapped__")]


def offered() -> list[str]:
    """The experts implementations the installed transformers offers: eager, then its interface's, sorted."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    return ["eager"] + sorted(ALL_EXPERTS_FUNCTIONS.keys())


def current(model) -> str | None:
    modules = experts_modules(model)
    return getattr(modules[0][1].config, "_experts_implementation", None) if modules else None


def set_implementation(model, name: str) -> PatchHandle:
    """Switch every experts module of `model` to `name`; the handle switches each sub-model back."""
    base = unwrap(model)
    handle = PatchHandle(ids.MOE_EXPERTS_IMPLEMENTATION)
    before = {id(m.config): (m.config, m.config._experts_implementation) for _, m in experts_modules(base)}
    base.set_experts_implementation(name)
    for _, module in experts_modules(base):  # a sub-model the top-level call did not reach (a text model's config)
        if module.config._experts_implementation != name:
            module.config._experts_implementation_internal = name

    def restore():
        for config, old in before.values():
            config._experts_implementation_internal = old

    handle.on_revert(restore)
    return handle


class ExpertsImplementationPatch:
    id = ids.MOE_EXPERTS_IMPLEMENTATION
    applicability = Applicability.SAFE  # applied only once MOE001 verified the implementation gives eager's math
    summary = "run the fused MoE experts through the implementation MOE001 verified and found fastest"
    keeps_unpacked_outputs = False

    def applies_to(self, model) -> str | None:
        if not experts_modules(model):
            return "the model has no experts module dispatched through transformers' experts interface"
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        refuse_unless_applicable(self, model)
        choice = context.option(self.id) if context is not None else None
        if not choice:
            raise ValueError(f"{self.id}: no implementation chosen (MOE001 chooses one and the report records it)")
        return set_implementation(model, choice)


__all__ = ["ExpertsImplementationPatch", "current", "experts_modules", "offered", "set_implementation"]
