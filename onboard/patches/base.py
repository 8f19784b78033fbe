"""What a patch is: a revertible change to a loaded model, with an id, an applicability and a predicate.

The patch layer imports nothing from checks or harness: `onboard check` (to fix and verify) and
`onboard train` (to train) apply the same objects.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol


class Applicability(str, enum.Enum):
    SAFE = "safe"  # cannot change the math of a correct model
    UNSAFE = "unsafe"  # changes what is trained; applied only when asked


@dataclass(frozen=True)
class PatchContext:
    """All a patch may read from the run that applies it (a check session, `onboard train`, `apply_patches` on a
    trainer of your own). A patch writes nothing back into it: what it changed beyond the model it reports on its
    handle (`PatchHandle.backend`), and the one applying it decides what follows."""

    # patch id -> the choice a check made for it (MOE001: which experts implementation), as the report records it
    options: Mapping[str, str] = field(default_factory=dict)
    # a small labelled text batch on the model's device, for patches that must run the model to find what to do
    probe_batch: Callable[[], dict[str, Any]] | None = None

    def option(self, patch_id: str) -> str | None:
        return self.options.get(patch_id)


@dataclass
class PatchHandle:
    """Undo for one application; `revert` is idempotent."""

    patch_id: str
    _undo: list[Callable[[], None]] = field(default_factory=list)
    # the attention implementation the patch switched the model to: the backend training asks for follows it
    backend: str | None = None

    def on_revert(self, fn: Callable[[], None]) -> None:
        self._undo.append(fn)

    def revert(self) -> None:
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> PatchHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.revert()


class Patch(Protocol):
    id: str
    applicability: Applicability
    summary: str
    # True where the patch changes only packed rows or the loss's normalisation, never the logits of a sample run
    # alone (tests/test_faults.py holds it to that): what a session computed on unpacked samples stays valid
    keeps_unpacked_outputs: bool = False

    def applies_to(self, model) -> str | None:
        """None when the patch can be applied to this model, else the reason it cannot."""

    def apply(self, model, context: PatchContext | None = None) -> PatchHandle:
        """Apply to `model` (a PEFT-wrapped model or a bare one); `context` carries the run's choices and a probe."""


class LoraTransform(Protocol):
    """A fix that is a change of the LoRA configuration, not of the model: which modules or parameters LoRA
    adapts. It rewrites a LoraConfig; whoever applies LoRA (LORA001, `onboard train`, `onboard.lora_config` for
    a trainer of your own) builds the adapter with the rewritten config. It has no apply(): nothing changes
    until LoRA is built."""

    id: str
    applicability: Applicability
    summary: str

    def applies_to(self, model) -> str | None:
        """None when the transform changes this model's LoRA, else the reason it does not."""

    def configure(self, config, model):
        """`config` (a peft LoraConfig) rewritten for `model`; returned unchanged where nothing applies."""


def is_lora_transform(patch) -> bool:
    return hasattr(patch, "configure") and not hasattr(patch, "apply")


def unwrap(model):
    """The transformers model under any PEFT wrapping."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def model_configs(base) -> list:
    """The model's config and its text config, each once (a text-only model's are the same object)."""
    return list({id(c): c for c in (base.config, base.config.get_text_config())}.values())


def set_attr(handle: PatchHandle, obj, name: str, value) -> None:
    """Set obj.name, restoring the old value (or absence) on revert."""
    missing = object()
    old = obj.__dict__.get(name, missing) if hasattr(obj, "__dict__") else getattr(obj, name, missing)

    def undo():
        if old is missing:
            if name in getattr(obj, "__dict__", {}):
                delattr(obj, name)
        else:
            setattr(obj, name, old)

    setattr(obj, name, value)
    handle.on_revert(undo)


def refuse_unless_applicable(patch, model) -> None:
    """Raise ValueError naming the patch and why, where it does not apply to `model` (every patch's apply starts so)."""
    reason = patch.applies_to(model)
    if reason:
        raise ValueError(f"{patch.id} does not apply: {reason}")

