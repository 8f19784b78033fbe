"""The patch layer: one registry of revertible fixes, shared by `onboard check` and `onboard train`."""

from onboard.patches.attention import AttentionFallbackPatch, CausalAttentionPatch
from onboard.patches import ids
from onboard.patches.base import (Applicability, LoraTransform, Patch, PatchContext, PatchHandle, is_lora_transform,
                                  unwrap)
from onboard.patches.cce import CcePatch, ModelLossPatch
from onboard.patches.extra_inputs import ExtraInputsPatch
from onboard.patches.fsdp import WrapClassPatch
from onboard.patches.labels import ShiftLabelsPatch
from onboard.patches.loss_kwargs import AcceptsNumItemsPatch, LossKwargsPatch
from onboard.patches.moe import ExpertsImplementationPatch
from onboard.patches.packing import (BlockMaskPatch, PackingPatch, SampleBoundariesPatch, SegmentConvPatch,
                                     UnpackedPatch,
                                     training_collator)
from onboard.patches.speed import Bf16AdaptersPatch, CompiledLayersPatch, PackedAttentionPatch
from onboard.patches.peft_targets import (ExcludeUnwrappablePatch, ExpertParametersPatch, WrappedLinearTargetsPatch,
                                         lora_config)

PATCHES: dict[str, Patch | LoraTransform] = {p.id: p for p in (
    AttentionFallbackPatch(), CausalAttentionPatch(), WrappedLinearTargetsPatch(), ExcludeUnwrappablePatch(), ExpertParametersPatch(),
    ExtraInputsPatch(),
    PackingPatch(), BlockMaskPatch(), SampleBoundariesPatch(), SegmentConvPatch(), UnpackedPatch(), LossKwargsPatch(),
    AcceptsNumItemsPatch(), CcePatch(),
    ModelLossPatch(), ShiftLabelsPatch(), PackedAttentionPatch(),
    CompiledLayersPatch(), Bf16AdaptersPatch(), ExpertsImplementationPatch(), WrapClassPatch(),
)}
if tuple(PATCHES) != ids.ALL:  # a patch without its constant, or a constant without its patch
    raise ImportError(f"onboard.patches: registry {sorted(PATCHES)} differs from onboard.patches.ids {sorted(ids.ALL)}")


def get_patch(patch_id: str) -> Patch:
    try:
        return PATCHES[patch_id]
    except KeyError:
        raise KeyError(f"unknown patch {patch_id!r}; known: {', '.join(PATCHES)}") from None


__all__ = ["PATCHES", "Applicability", "LoraTransform", "Patch", "PatchContext", "PatchHandle", "get_patch", "ids",
           "is_lora_transform", "lora_config", "training_collator", "unwrap"]
