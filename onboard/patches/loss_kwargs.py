"""Gradient accumulation that weighs every trained token the same, whatever the micro-batches hold.

The HF Trainer passes `num_items_in_batch` (the trained tokens of the whole accumulated batch) to a forward
that declares it takes loss kwargs (`accepts_loss_kwargs`, else a `**kwargs` in its signature), and then does
not divide by the accumulation steps: the forward's loss must be its token sum over that count. Otherwise it
divides each micro-batch's mean loss by the steps, which is the token mean only when every micro-batch holds
as many trained tokens (packed variable-length data never does).

loss.num_items_in_batch: for a forward whose loss ignores the count (FM-LOSS-GA: swallowed by **kwargs, its
loss k times too large; or refused, FM-LOSS-GA-WEIGHTS: a mean of means). The forward's own mean loss is
rescaled to its token sum over the Trainer's count (x its trained tokens / num_items_in_batch), and the model
declares it takes the count.

loss.accepts_num_items: for a class that declares `accepts_loss_kwargs = False` although its loss takes the
count (Qwen2.5-VL, Qwen3-VL, Gemma 4 ForConditionalGeneration in transformers 5.24): it declares True.
"""

from __future__ import annotations

import torch

from onboard.patches.base import Applicability, PatchContext, PatchHandle, set_attr, unwrap
from onboard.patches import ids

IGNORE = -100


def trained_count(kwargs: dict, shifted: bool = True) -> torch.Tensor | None:
    """The trained tokens of one forward's labels as the Trainer counts them (shift_labels, else labels[..., 1:]; an
    encoder-decoder's labels whole: its decoder's logits at t predict labels[t])."""
    labels = kwargs.get("shift_labels")
    if labels is None and kwargs.get("labels") is not None:
        labels = kwargs["labels"][..., 1:] if shifted else kwargs["labels"]
    return None if labels is None else labels.ne(IGNORE).sum()


class LossKwargsPatch:
    id = ids.LOSS_NUM_ITEMS
    applicability = Applicability.SAFE
    keeps_unpacked_outputs = True  # the logits are untouched; only a loss given num_items_in_batch is rescaled
    summary = ("rescale the forward's mean loss to its token sum over the Trainer's num_items_in_batch, and declare "
               "the model takes it: accumulated micro-batches weigh every token the same")

    def applies_to(self, model) -> str | None:
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        base = unwrap(model)
        handle = PatchHandle(self.id)
        set_attr(handle, base, "accepts_loss_kwargs", True)
        state: dict = {}
        # the Trainer counts an encoder-decoder's labels whole (it reads config.is_encoder_decoder to decide), and
        # such a model's own mean is over them all: the rescale counts the same tokens (GA001's re-check judges it)
        shifted = not getattr(base.config, "is_encoder_decoder", False)

        def pre_hook(module, args, kwargs):
            # the forward's own loss ignores the count (it may not even take it): keep it for the rescale
            count = kwargs.pop("num_items_in_batch", None)
            state.update(count=count, local=trained_count(kwargs, shifted))
            return args, kwargs

        def post_hook(module, args, kwargs, output):
            count, local = state.pop("count", None), state.pop("local", None)
            loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
            if count is None or local is None or loss is None:
                return None
            output["loss"] = loss * (local.to(loss.device) / torch.as_tensor(count, device=loss.device))
            return output

        for hook in (base.register_forward_pre_hook(pre_hook, with_kwargs=True),
                     base.register_forward_hook(post_hook, with_kwargs=True)):
            handle.on_revert(hook.remove)
        return handle


class AcceptsNumItemsPatch:
    id = ids.LOSS_ACCEPTS_NUM_ITEMS
    applicability = Applicability.SAFE
    keeps_unpacked_outputs = True  # a declaration: the forward is untouched
    summary = ("declare that the model takes num_items_in_batch, where its class says it does not but its loss takes "
               "it: the Trainer passes the count instead of averaging micro-batch means")

    def applies_to(self, model) -> str | None:
        if getattr(unwrap(model), "accepts_loss_kwargs", None) is not False:
            return "the model does not refuse loss kwargs"
        return None

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        handle = PatchHandle(self.id)
        set_attr(handle, unwrap(model), "accepts_loss_kwargs", True)
        return handle
