"""labels.shift: the targets of a class whose own loss does not shift labels, shifted before its forward.

BartForCausalLM, Marian's, XLM's and Whisper's decoders compute their loss as the cross-entropy of position t
against labels[t]: their documentation asks for labels shifted beforehand. Given what a Trainer passes
(labels = input_ids, prompt tokens -100), such a model learns to copy the current token. The patch wraps the
model's forward: each sample's labels move one position left (labels'[t] = labels[t + 1]), and the last
position of every sample gets -100, so no sample is trained on the next sample's first token. The samples of a
packed row are told apart where the packing collator's `position_ids` restart (at 0, or at the model's own first
position); a right-padded batch shifts each row, its padding already -100. The logits are untouched: only which token each position is trained
on changes, to the next one, which is what the HF Trainer's causal-LM loss does for every other class.

The Trainer counts a batch's trained tokens as `labels[..., 1:] != -100`, the shifted labels' count but for a
sample whose first token is trained (never the case in chat data, whose samples start with the template).
Which classes need it is measured, not named: CCE001 proposes it where the model's own loss equals the
unshifted cross-entropy of its logits, and its re-check (the model's loss against the next-token
cross-entropy of its logits, and the fused loss) verifies it; TRAIN001 then compares a real step with the
samples' next-token loss.
"""

from __future__ import annotations

import functools
import inspect

import torch

from onboard.patches import ids
from onboard.patches.base import Applicability, PatchContext, PatchHandle, refuse_unless_applicable, set_attr, unwrap

IGNORE = -100


def shift_labels(labels: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Each sample's labels one position left, -100 at its last position; samples of a packed row are the runs
    of `position_ids` that restart at 0."""
    shifted = torch.full_like(labels, IGNORE)
    shifted[..., :-1] = labels[..., 1:]
    if position_ids is not None and position_ids.dim() == labels.dim() + 1:  # mrope: (3, batch, seq), one numbering
        position_ids = position_ids[0]
    if position_ids is not None and position_ids.shape == labels.shape:
        restart = position_ids[..., 1:] != position_ids[..., :-1] + 1  # a sample starts (at 0, or a model's own start)
        shifted[..., :-1][restart] = IGNORE  # the last position of a sample the next one follows
    return shifted


class ShiftLabelsPatch:
    id = ids.LABELS_SHIFT
    applicability = Applicability.SAFE
    summary = "shift each sample's labels one position before the forward, for a class whose own loss does not"
    keeps_unpacked_outputs = True  # the logits are the same; only the loss's targets move

    def applies_to(self, model) -> str | None:
        if "labels" not in inspect.signature(unwrap(model).forward).parameters:
            return f"{type(unwrap(model)).__name__}.forward takes no labels"
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        refuse_unless_applicable(self, model)
        base = unwrap(model)
        original = base.forward  # PEFT calls the model's forward attribute directly: hooks would be bypassed

        @functools.wraps(original)
        def forward(*args, **kwargs):
            if kwargs.get("labels") is not None:
                kwargs["labels"] = shift_labels(kwargs["labels"], kwargs.get("position_ids"))
            return original(*args, **kwargs)

        handle = PatchHandle(self.id)
        set_attr(handle, base, "forward", forward)
        return handle


__all__ = ["ShiftLabelsPatch", "shift_labels"]
