"""The session's state changes only through its methods, and each drops what was computed on the old state."""

from __future__ import annotations

import pytest
import torch

from conftest import make_session
from onboard.harness.forward import example_losses
from onboard.patches import PATCHES, get_patch, ids

KEEPING = sorted(p.id for p in PATCHES.values() if getattr(p, "keeps_unpacked_outputs", False))
MODELS = {ids.PACKING_NO_CACHE: "tiny:llama", ids.PACKING_BLOCK_MASK: "fault:pack-isolation",
          ids.PACKING_SAMPLE_BOUNDARIES: "fault:pack-recurrent", ids.PACKING_SEGMENT_CONV: "fault:pack-conv",
          ids.PACKING_UNPACKED: "fault:pack-positions", ids.CCE_MODEL_LOSS: "fault:cce-math",
          ids.LOSS_NUM_ITEMS: "fault:loss-ga", ids.LOSS_ACCEPTS_NUM_ITEMS: "fault:ga-weights",
          ids.LABELS_SHIFT: "fault:labels-unshifted", ids.FSDP_WRAP_CLASS: "fault:fsdp-wrap"}


def test_the_patches_that_keep_cached_values_are_known():
    assert set(KEEPING) == set(MODELS)


@pytest.mark.parametrize("patch_id", KEEPING)
def test_a_patch_that_keeps_unpacked_outputs_keeps_them_exactly(patch_id):
    """The session keeps its reference losses across these patches: a sample run alone must give the same
    losses, bit for bit, with the patch applied."""
    session = make_session(MODELS[patch_id])
    before = [example_losses(session.model, ex, session.device) for ex in session.examples[:3]]
    handle = get_patch(patch_id).apply(session.model, session.patch_context())
    try:
        after = [example_losses(session.model, ex, session.device) for ex in session.examples[:3]]
    finally:
        handle.revert()
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_changing_the_model_drops_what_was_computed_on_it():
    from peft import get_peft_model

    session = make_session("tiny:llama")
    first = session.reference_losses([0])[0]
    session.apply_patch(get_patch(ids.PACKING_NO_CACHE))  # keeps unpacked outputs: the values stay
    assert session.reference_losses([0])[0] is first
    peft = get_peft_model(session.model, session.lora_config())
    with torch.no_grad():  # an adapter that changes the outputs: B no longer zero
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.fill_(0.01)
    session.set_adapter(peft)
    again = session.reference_losses([0])[0]
    assert again is not first and not torch.equal(again, first)
    session.apply_patch(get_patch(ids.ATTENTION_FALLBACK))  # may change outputs: dropped, recomputed
    assert session.reference_losses([0])[0] is not again
