"""loss.num_items_in_batch: correct gradient-accumulation normalisation for forwards that ignore it.

The HF Trainer takes a forward with `**kwargs` as consuming `num_items_in_batch`: it then passes the token
count of the whole accumulated batch and skips dividing each micro-batch loss by the accumulation steps.
A forward that swallows the count and returns its own per-micro-batch mean (common in custom and older
classes) is then summed k times: loss and gradients come out k times too large (FM-LOSS-GA). Setting
`accepts_loss_kwargs = False` on the model makes the Trainer divide by the steps again.
"""

from __future__ import annotations

from onboard.patches.base import Applicability, PatchHandle, set_attr, unwrap
from onboard.patches import ids


class LossKwargsPatch:
    id = ids.LOSS_NUM_ITEMS
    applicability = Applicability.SAFE
    keeps_unpacked_outputs = True  # a sample run alone gives the same logits (tested): cached values stay
    summary = "mark the model as not consuming num_items_in_batch, so the Trainer divides by the GA steps"

    def applies_to(self, model) -> str | None:
        if getattr(unwrap(model), "accepts_loss_kwargs", True) is False:
            return "the model already says it does not accept loss kwargs"
        return None

    def apply(self, model, context=None) -> PatchHandle:
        handle = PatchHandle(self.id)
        set_attr(handle, unwrap(model), "accepts_loss_kwargs", False)
        return handle
