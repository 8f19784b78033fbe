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


def left_out_by_training(patch_ids, device_type, cce: str = "auto") -> dict[str, str]:
    """The verified patches a training run on `device_type` ("cpu", "cuda", "cuda:0" or a torch.device) leaves
    out, each with why. The fused CCE loss saves GPU memory: with cce "auto" it is used on CUDA only (the CPU
    trains with the plain loss), "on" uses it anywhere, "off" nowhere. One rule for prepare_model and for the
    terminal, which names from a report what training will not apply."""
    device_type = str(getattr(device_type, "type", device_type)).split(":")[0]
    left_out: dict[str, str] = {}
    if ids.CCE_FUSED_LOSS in patch_ids and not (cce == "on" or (cce == "auto" and device_type == "cuda")):
        left_out[ids.CCE_FUSED_LOSS] = "--cce off" if cce == "off" else "GPU only (--cce on forces it)"
    return left_out


def get_patch(patch_id: str) -> Patch:
    try:
        return PATCHES[patch_id]
    except KeyError:
        raise KeyError(f"unknown patch {patch_id!r}; known: {', '.join(PATCHES)}") from None


__all__ = ["PATCHES", "Applicability", "LoraTransform", "Patch", "PatchContext", "PatchHandle", "get_patch", "ids",
           "is_lora_transform", "left_out_by_training", "lora_config", "training_collator", "unwrap"]
