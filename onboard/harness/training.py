"""What a training step is, in one place: the defaults `onboard check` and `onboard train` share, and the one
builder of TrainingArguments that GA001, TRAIN001 and `onboard train` all use. What TRAIN001 ran is then what
step 1 of training runs: the same LoRA rank and alpha, the same lengths, the same mixed-precision and
gradient-checkpointing flags (on CUDA too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession



def checkpointing(session: ModelSession) -> bool:
    """Whether a training step checkpoints gradients: the session's choice, else on with CUDA."""
    chosen = getattr(session, "gradient_checkpointing", None)
    return session.device.type == "cuda" if chosen is None else bool(chosen)


def training_arguments(session: ModelSession, out, **overrides):
    """TrainingArguments for a step on the session's model: precision from its dtype on CUDA (bf16/fp16),
    gradient checkpointing as training runs it, quiet, nothing saved unless asked. `overrides` are the
    caller's schedule (batch size, accumulation, steps, saving)."""
    import torch
    from transformers import TrainingArguments

    cuda = session.device.type == "cuda"
    ckpt = checkpointing(session)
    fields = dict(
        per_device_train_batch_size=1, report_to="none", save_strategy="no", use_cpu=not cuda,
        disable_tqdm=True, log_level="error", dataloader_num_workers=0, remove_unused_columns=False,
        bf16=cuda and session.dtype is torch.bfloat16, fp16=cuda and session.dtype is torch.float16,
        **checkpointing_arguments(ckpt, checkpoint_kwargs(session) if ckpt else None),
        seed=session.seed, data_seed=session.seed,
    )
    fields.update(overrides)
    return TrainingArguments(str(out), **fields)


def checkpoint_kwargs(session: ModelSession, every: int | None = None) -> dict:
    """The checkpointing keywords training passes (non-reentrant; every n-th layer where the setup, or `every`, asks
    for it and this transformers can: its every_n_layers came with the 5.24 rename)."""
    kwargs: dict = {"use_reentrant": False}
    every = every or getattr(session.setup, "checkpoint_every", 1)
    if every > 1 and renamed_to_activation():
        kwargs["every_n_layers"] = every
    return kwargs


def enable_checkpointing(model, kwargs: dict, input_grads: bool = True) -> None:
    """Checkpointing on `model` (a PEFT model or a transformers model) as the Trainer turns it on for training:
    non-reentrant with `kwargs`, the frozen embeddings' output made to require a gradient (transformers' hook; once:
    a second registration would leave the first behind). `input_grads=False` removes that hook: non-reentrant
    checkpointing does not need it, and under torch.compile it is a graph break of its own on every model."""
    from onboard.patches.base import unwrap

    base = unwrap(model)
    kwargs = dict(kwargs)
    every, offload = kwargs.pop("every_n_layers", 1), kwargs.pop("offload", False)
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, every_n_layers=every,
                                             offload=offload)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    hooked = bool(getattr(base, "_require_grads_hooks", None) or getattr(base, "_require_grads_hook", None))
    if input_grads and not hooked and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    elif not input_grads and hooked:
        base.disable_input_require_grads()
        base._require_grads_hooks, base._require_grads_hook = [], None


def mixed_precision(session: ModelSession):
    """The autocast dtype the Trainer runs the step under (accelerate's mixed precision: bf16/fp16 on CUDA for a
    model of that dtype, as training_arguments asks), or None."""
    import torch

    if session.device.type == "cuda" and session.dtype in (torch.bfloat16, torch.float16):
        return session.dtype
    return None


# transformers 5.24 renamed gradient checkpointing to activation checkpointing: TrainingArguments'
# gradient_checkpointing(_kwargs) and the model's gradient_checkpointing_enable/_disable and
# is_gradient_checkpointing are deprecated aliases (a FutureWarning each, removed in v6). Onboard uses the new
# names where the installed transformers has them, the old ones before 5.24; either sets the same flag.


def renamed_to_activation() -> bool:
    """Whether the installed transformers names it activation checkpointing (5.24 and later)."""
    import dataclasses

    from transformers import TrainingArguments

    return any(f.name == "activation_checkpointing" for f in dataclasses.fields(TrainingArguments))


def checkpointing_arguments(on: bool, kwargs: dict | None = None) -> dict:
    """The TrainingArguments fields that turn checkpointing on or off, under this transformers' names."""
    prefix = "activation" if renamed_to_activation() else "gradient"
    return {f"{prefix}_checkpointing": on, f"{prefix}_checkpointing_kwargs": kwargs}


def checkpointing_on(args) -> bool:
    """Whether `args` (TrainingArguments, TRL's SFTConfig) checkpoint: read under the new name where it exists."""
    value = getattr(args, "activation_checkpointing", None)
    return bool(getattr(args, "gradient_checkpointing", False) if value is None else value)


def prepare_for_checkpointing(model, args) -> None:
    """LoRA under gradient checkpointing: the frozen embeddings' output must carry a gradient."""
    if checkpointing_on(args) and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()


def undo_checkpointing(model) -> None:
    """After a check's step: the session's model goes on without checkpointing (the Trainer turned it on)."""
    from onboard.patches.base import unwrap

    base = unwrap(model)
    if hasattr(base, "activation_checkpointing_disable"):  # transformers 5.24 and later
        if getattr(base, "is_activation_checkpointing", False):
            base.activation_checkpointing_disable()
    elif getattr(base, "is_gradient_checkpointing", False):
        base.gradient_checkpointing_disable()
    if getattr(base, "_require_grads_hook", None) is not None:
        base.disable_input_require_grads()


def restore_parameters(model, saved: dict) -> None:
    """Copy saved values back into the named parameters (an adapter a check trained or perturbed) and drop the
    gradients: later checks and the report see the adapter as it was."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in saved:
                param.copy_(saved[name])
    model.zero_grad(set_to_none=True)


__all__ = ["checkpoint_kwargs", "checkpointing", "checkpointing_arguments", "checkpointing_on", "enable_checkpointing",
           "mixed_precision", "prepare_for_checkpointing", "renamed_to_activation", "restore_parameters",
           "training_arguments", "undo_checkpointing"]
