"""Runs the checks in order: prerequisites, crash isolation, then fix -> re-check for each finding."""

from __future__ import annotations

import platform
import time
import traceback
from importlib.metadata import PackageNotFoundError, version as package_version
from typing import Callable, Iterable, TYPE_CHECKING

import torch

from onboard.harness.errors import OnboardError
from onboard.harness.memory import gpu_name
from onboard.harness.result import CheckResult, FixRecord, RunReport, Status
from onboard.harness.setup import FIELDS

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession


def run_check(check, session: ModelSession) -> CheckResult:
    """Call one check; a crash becomes an ERROR result with the traceback as evidence."""
    start = time.perf_counter()
    ran_on = None
    try:
        ran_on = session.use(check.runs_on)  # the slice or the whole model, with the patches so far moved over
        result = check.run(session)
    except OnboardError:
        raise
    except Exception as exc:  # noqa: BLE001 - a crashing check must not lose the others' results
        if isinstance(exc, torch.OutOfMemoryError):
            torch.cuda.empty_cache()
        result = check.result(Status.ERROR, f"the check crashed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        result.evidence["traceback"] = traceback.format_exc(limit=-8)  # the innermost frames: where it broke
    result.duration_s = time.perf_counter() - start
    result.ran_on = ran_on
    try:
        result.figures = check.figures(result, str(session.device))
    except Exception as exc:  # noqa: BLE001 - a plot that cannot be drawn loses no result
        result.evidence["figures_error"] = f"{type(exc).__name__}: {exc}"
    return result


def try_fix(check, session: ModelSession, result: CheckResult) -> FixRecord:
    """Fix the finding for the rest of the run: the proposed patch, then each alternative, each re-checked and
    kept only when the finding is gone. When none verifies, the fallback (a slower setup that avoids the
    optimisation: unpacked training, the model's own loss), re-checked the same way, with its cost."""
    tried: list[dict] = []
    record, after = None, None
    for patch_id in [p for p in (result.proposed_patch, *result.alternatives) if p]:
        record, after = _attempt(check, session, result, patch_id)
        if record.verified:
            record.tried = tried
            return record
        tried.append({"patch_id": patch_id, "why_not": record.error or record.message_after})
    # the re-check may name a fallback of its own (PACK001 under a block mask that isolates but leaves the
    # positions wrong): the last word on the finding is the latest run's
    fallback = (after.fallback_patch if after is not None and after.fallback_patch else None) or result.fallback_patch
    if fallback and fallback not in [t["patch_id"] for t in tried]:
        record, after = _attempt(check, session, result, fallback)
        record.fallback, record.tried = True, tried
        record.cost = after.evidence.get("fallback_cost") if after is not None else None
        return record
    if record is None:  # nothing to try: no proposed patch, and the fallback was already tried
        return FixRecord(result.fallback_patch or "", applied=False, verified=False, error="no fix to try")
    record.tried = tried[:-1]  # the record is the last try itself
    return record


def _attempt(check, session: ModelSession, result: CheckResult, patch_id: str) -> tuple[FixRecord, CheckResult | None]:
    """Apply one patch for the rest of the run, re-run the check; revert it unless the finding is gone."""
    from onboard.patches import get_patch

    patch = get_patch(patch_id)
    try:  # the check's choice for its patch (MOE001's experts implementation) goes with it, as a value
        session.apply_patch(patch, option=(result.evidence.get("patch_options") or {}).get(patch.id))
    except Exception as exc:  # noqa: BLE001
        return FixRecord(patch.id, applied=False, verified=False, error=f"{type(exc).__name__}: {exc}"), None
    after = run_check(check, session)
    # a fix is verified when the finding is gone: PASS, or a WARN about something else
    verified = after.status is Status.PASS or (after.status is Status.WARN and after.diagnosis != result.diagnosis)
    if not verified:  # what did not fix the finding is not left to shape the checks after it
        session.revert_patch(patch.id)
    return FixRecord(
        patch_id=patch.id,
        applied=True,
        verified=verified,
        status_after=after.status,
        message_after=after.message,
        measurements_after=after.measurements,
    ), after


def run_checks(
    session: ModelSession,
    checks: Iterable[type],
    *,
    fix: bool | None = None,
    unsafe_fixes: bool | None = None,
    not_applicable: dict[str, str] | None = None,
    on_result: Callable[[CheckResult], None] = lambda _: None,
    on_start: Callable[[object], None] = lambda _: None,
) -> RunReport:
    from onboard.patches import Applicability, get_patch

    setup = session.setup  # what was not given here is the setup's: fixing, unsafe fixes, checks not applicable
    fix = not setup.no_fix if fix is None else fix
    unsafe_fixes = setup.unsafe_fixes if unsafe_fixes is None else unsafe_fixes
    not_applicable = setup.skip if not_applicable is None else not_applicable
    start = time.perf_counter()
    results: dict[str, CheckResult] = {}
    unmet: set[str] = set()  # checks that failed, crashed, or were skipped for a prerequisite of their own
    needs: CheckResult | None = None  # a check found that the text probes do not fit the model: none fit it after
    for check_cls in checks:
        check = check_cls()
        missing = [code for code in check.requires if code in unmet]
        if not_applicable and check.code in not_applicable:  # the training setup does not use it
            result = check.result(Status.SKIP, f"not applicable: {not_applicable[check.code]}")
        elif needs is not None:
            result = check.result(Status.SKIP, f"not applicable: the model needs {needs.needs.split(':')[0]} ({needs.code})")
        elif missing:
            result = check.result(Status.SKIP, f"skipped: prerequisite {', '.join(missing)} did not pass")
            unmet.add(check.code)
        elif check.whole_only and not session.whole_fits:
            result = check.result(Status.SKIP, f"needs the whole model, not loaded: {session.whole_absent}; the "
                                               "code-path checks ran on its layer-complete slice")
        elif check.needs_labels and not any(ex.n_trained for ex in session.examples):
            result = check.result(Status.SKIP, "skipped: no sample has a labelled token to compute a loss on "
                                               "(LOSS001: FM-LOSS-MASK)")
        else:
            on_start(check)
            result = run_check(check, session)
            if fix and result.status in (Status.FAIL, Status.WARN) and (result.proposed_patch or result.fallback_patch):
                patch = get_patch(result.proposed_patch or result.fallback_patch)
                if patch.applicability is Applicability.SAFE or unsafe_fixes:
                    result.fix = try_fix(check, session, result)
                else:
                    result.evidence["unapplied_fix"] = f"{patch.id} changes what is trained: rerun with --unsafe-fixes"
        results[check.code] = result
        session.results[check.code] = result  # what later checks may cite (TRAIN001 names PACK001's mechanism)
        if result.blocking:
            unmet.add(check.code)
        if result.needs and needs is None:
            needs = result
        on_result(result)
    session.timings["checks"] = time.perf_counter() - start
    return RunReport(
        model=session.describe(),
        environment=environment(session.device),
        checks=list(results.values()),
        seed=session.seed,
        options={"fix": fix, "unsafe_fixes": unsafe_fixes, "strict": setup.strict, **run_options(session)},
        duration_s=sum(session.timings.values()),
        timings={**session.timings, **{r.name: r.duration_s for r in results.values()}},
        thresholds=session.thresholds.resolved(str(session.dtype).removeprefix("torch.")),
    )


def run_options(session: ModelSession) -> dict:
    """The setup the checks ran with, as the report records it: every Setup field a run can set, with the dtype
    and gradient checkpointing resolved for the device (what "auto" and "default" became). TRAINED_WITH
    (onboard.harness.setup) names the ones training must share."""
    from onboard.harness.training import checkpointing

    setup = session.setup
    skip = ("model", "revision", "trust_remote_code", "random_weights", "thresholds", "chat_template_text",
            "no_fix", "unsafe_fixes", "strict")  # the model is the report's model; the run's own flags follow
    options = {name: getattr(setup, name) for name in FIELDS if name not in skip}
    options.update(
        lora_targets=list(setup.lora_targets) if setup.lora_targets else "all-linear",
        dtype=str(session.dtype).removeprefix("torch."), gradient_checkpointing=checkpointing(session),
        device=str(session.device), data=str(session.data_path),
        chat_template=setup.chat_template or ("inline" if setup.chat_template_text else None),
    )
    return options


def _installed(distribution: str) -> str | None:
    try:
        return package_version(distribution)
    except PackageNotFoundError:
        return None


def environment(device) -> dict:
    import peft
    import transformers

    return {
        "onboard": _installed("onboard"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cut_cross_entropy": _installed("cut-cross-entropy"),
        "device": str(device),
        "gpu": gpu_name(device),
        "platform": platform.platform(),
    }
