"""fsdp.wrap_class: FSDP shards a model by the classes its `_no_split_modules` names (accelerate's FSDP auto-wrap
policy, TRL's and axolotl's FSDP configs read it). Where that list names no class the model has (a subclass that
renamed its decoder layer and kept its parent's list), wrapping falls back to one unit: every parameter is
gathered at once on every rank. The patch sets the model's `_no_split_modules` (on the instance, the class left as
it is) to the class of its repeated blocks, the decoder layers found in the module tree (onboard.patches.speed's
repeated_blocks); FSDP001 verifies it by sharding again."""

from __future__ import annotations

from onboard.patches import ids
from onboard.patches.base import Applicability, PatchContext, PatchHandle, refuse_unless_applicable, unwrap

_MISSING = object()


class WrapClassPatch:
    id = ids.FSDP_WRAP_CLASS
    applicability = Applicability.SAFE
    summary = "FSDP wraps the decoder layers found in the module tree (the model's _no_split_modules set to their class)"
    keeps_unpacked_outputs = True  # only what FSDP reads: the model computes as before

    def applies_to(self, model) -> str | None:
        from onboard.patches.speed import repeated_blocks

        if not repeated_blocks(model):
            return "no repeated block (a ModuleList of one class) to shard by"
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        from onboard.patches.speed import repeated_blocks

        refuse_unless_applicable(self, model)
        base = unwrap(model)
        before = base.__dict__.get("_no_split_modules", _MISSING)
        base._no_split_modules = [type(repeated_blocks(model)[0]).__name__]
        handle = PatchHandle(self.id)

        def restore():
            if before is _MISSING:
                base.__dict__.pop("_no_split_modules", None)
            else:
                base._no_split_modules = before

        handle.on_revert(restore)
        return handle
