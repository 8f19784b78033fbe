"""What training takes from a check report, one rule for `onboard train`, the Python API and the terminal: which
verified patches a run on a device leaves out, and whether the report is still this onboard's verdict."""

from __future__ import annotations

from typing import Any, Mapping

from onboard.patches import left_out_by_training  # noqa: F401 - one rule, kept in the patch layer

CHECK_SAMPLE = 32  # chats of the training file the check run before training uses (`onboard train` without --from)


def changed_checks(report) -> list[str]:
    """The checks whose recorded version is not the installed one's (0: a report that recorded none)."""
    from onboard.checks import CHECKS

    now = {c.code: c.version for c in CHECKS}
    return [f"{r.code} v{r.version or '?'} in the report, v{now[r.code]} now" for r in report.checks
            if r.code in now and r.version != now[r.code]]


def typed_against_report(report, given: Mapping[str, Any], typed: set[str]) -> list[str]:
    """The options a user typed for `train --from` that differ from what the report checked, before any model
    loads: each trained-with option typed (TRAINED_WITH) against the report's record of it. Values that are only
    known once the model and device are there ("auto" dtype, the default checkpointing) are left to the full
    comparison after loading."""
    from onboard.harness.setup import DTYPE_NAMES, TRAINED_WITH, Setup

    recorded = report.options
    typed_setup = Setup.build("command line", **{k: given[k] for k in typed if k in given})
    differ = []
    for name in TRAINED_WITH:
        if name not in typed or name not in recorded:
            continue
        now = getattr(typed_setup, name)
        if name == "dtype":
            now = DTYPE_NAMES.get(now)  # "auto" waits for the device
        elif name == "lora_targets":
            now = list(now) if now else "all-linear"
        if now is not None and now != recorded[name]:
            differ.append(f"{name} {recorded[name]!r} checked, {now!r} given")
    return differ


__all__ = ["CHECK_SAMPLE", "changed_checks", "left_out_by_training", "typed_against_report"]
