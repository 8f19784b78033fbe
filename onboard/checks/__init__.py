"""The checklist: one module per check, run in this order. Codes are stable; names describe the fault."""

from __future__ import annotations

from onboard.checks.attention import AttentionCheck
from onboard.checks.base import Check, FixAvailability
from onboard.checks.cce import CceCheck
from onboard.checks.compile import CompileCheck
from onboard.checks.fsdp import FsdpCheck
from onboard.checks.grad_accum import GradAccumCheck
from onboard.checks.initial_loss import InitialLossCheck
from onboard.checks.kernels import KernelsCheck
from onboard.checks.load import LoadCheck
from onboard.checks.lora import LoraCheck
from onboard.checks.moe import MoeCheck
from onboard.checks.packing import PackingCheck
from onboard.checks.train_step import TrainStepCheck

CHECKS: tuple[type[Check], ...] = (
    LoadCheck, AttentionCheck, LoraCheck, InitialLossCheck, PackingCheck, CceCheck, GradAccumCheck, TrainStepCheck,
    KernelsCheck, MoeCheck, CompileCheck, FsdpCheck,
)


def find_check(key: str) -> type[Check]:
    """A check by code (PACK001) or name (packing), case-insensitive; suggests on a typo."""
    import difflib

    lowered = key.lower()
    for check in CHECKS:
        if lowered in (check.code.lower(), check.name.lower()):
            return check
    keys = [c.code for c in CHECKS] + [c.name for c in CHECKS]
    close = difflib.get_close_matches(key, keys, n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(keys)}"
    raise KeyError(f"unknown check {key!r}{hint}")


__all__ = ["CHECKS", "Check", "FixAvailability", "find_check"]
