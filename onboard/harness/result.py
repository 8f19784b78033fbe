"""The records a run produces: one CheckResult per check, gathered into a RunReport.

Everything a renderer shows comes from these records; renderers never recompute.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1


class Status(str, enum.Enum):
    PASS = "PASS"
    WARN = "WARN"  # a finding worth reading that does not stop training
    FAIL = "FAIL"  # a finding: the model would train wrongly as it is
    ERROR = "ERROR"  # the check itself crashed; says nothing about the model
    SKIP = "SKIP"  # prerequisite missing or not applicable, with the reason


class Verdict(str, enum.Enum):
    READY = "READY"
    READY_WITH_FIXES = "READY_WITH_FIXES"
    NOT_READY = "NOT_READY"  # a finding about the model that no verified patch fixes
    INCONCLUSIVE = "INCONCLUSIVE"  # no such finding, but a check crashed: onboard could not judge the model
    # no finding, and the probes do not fit the model: its training needs inputs text data lacks (pixels), or
    # another objective than labelled next tokens; the report says what it needs
    NOT_APPLICABLE = "NOT_APPLICABLE"


VERDICT_RULE = """\
READY: every check passed (a WARN costs speed or coverage, never correctness).
READY_WITH_FIXES: every finding is fixed by a verified patch, or by a verified fallback: a slower setup that
  leaves the failing optimisation off and trains correctly, with its cost stated.
    packing: packing.block_mask, packing.sample_boundaries, packing.segment_conv in turn, each verified by isolation (another sample
      changed moves nothing) and harm (each packed sample's loss equals its loss alone); else packing.unpacked,
      right-padded micro-batches, verified the same way on a padded batch and by TRAIN001's step (loss and
      adapter gradients equal the samples run one by one); cost: the padding on your data.
    the fused loss: cce.model_loss, the model's own loss over full logits, verified when it is the next-token
      cross-entropy of the logits; cost: the logits' memory.
    speed levers, experts kernels, torch.compile: left off (WARN) when they change the math.
NOT_READY: no verified configuration trains the model correctly: a loss that is not the next-token loss, a
  model that attends to later tokens with no causal switch, missing weights, a forward that fails, adapters
  that learn nothing.
INCONCLUSIVE: a check crashed and nothing was found: onboard could not judge (exit 3).
NOT_APPLICABLE: the text probes do not fit the model: its forward needs inputs text data lacks (pixel_values,
  bbox, a state), or given text labels it has no next-token loss to train (audio codebooks, a diffusion
  objective); the report names what it needs, from the model's own signature or error (exit 4)."""


class ExitCode(enum.IntEnum):
    OK = 0  # READY, or READY_WITH_FIXES without --strict
    NOT_READY = 1
    USAGE_ERROR = 2  # bad arguments or bad input: unknown model, not a causal LM, malformed data
    ENVIRONMENT_ERROR = 3  # the machine or onboard itself: no network, OOM, a bug, a check that crashed (INCONCLUSIVE)
    NOT_APPLICABLE = 4  # the text probes do not fit the model (it needs pixels, or trains another objective)


def bar_figure(title: str, groups: list[str], series: dict[str, list[float | None]], unit: str, *,
               colors: dict[str, str] | None = None, lines: dict[str, float] | None = None) -> dict[str, Any]:
    """A check's plot as data: grouped bars (one group per label, one bar per series), dashed reference
    `lines`; renderers draw it (reports.html), the JSON keeps it."""
    return {"kind": "bars", "title": title, "groups": list(groups), "series": series, "unit": unit,
            "colors": colors or {}, "lines": lines or {}}


def note_figure(text: str) -> dict[str, Any]:
    """Where a plot would be but the run could not measure it: why."""
    return {"kind": "note", "text": text}


COMPARISONS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
               ">=": lambda a, b: a >= b, "==": lambda a, b: a == b}


@dataclass
class Measurement:
    value: float | int | str | bool | None
    unit: str = ""
    threshold: str | None = None  # for people: the comparison as text, or a note where there is no number
    limit: float | None = None  # for programs: the value must satisfy `value <compare> limit`
    compare: str | None = None

    def __post_init__(self):
        if self.compare is not None and self.compare not in COMPARISONS:
            raise ValueError(f"unknown comparison {self.compare!r}")

    @property
    def within(self) -> bool | None:
        """Whether the value satisfies its limit; None where it has none (or is not a number)."""
        if self.compare is None or self.limit is None or not isinstance(self.value, (int, float)):
            return None
        return bool(COMPARISONS[self.compare](self.value, self.limit))

    def to_dict(self) -> dict[str, Any]:
        out = {"value": self.value, "unit": self.unit, "threshold": self.threshold}
        if self.compare is not None:
            out.update(limit=self.limit, compare=self.compare)
        return out


@dataclass
class FixRecord:
    patch_id: str
    applied: bool
    verified: bool
    status_after: Status | None = None
    message_after: str = ""
    measurements_after: dict[str, Measurement] = field(default_factory=dict)
    error: str | None = None
    # a slower setup that trains correctly where the optimisation could not be fixed (packing.unpacked,
    # cce.model_loss), with what it costs, measured
    fallback: bool = False
    cost: str | None = None
    tried: list[dict[str, Any]] = field(default_factory=list)  # the fixes tried before this one: patch_id, why not


@dataclass
class CheckResult:
    code: str
    name: str
    status: Status
    message: str
    diagnosis: str | None = None  # a failure-mode id from FAILURE_MODES.md, e.g. FM-PACK-CACHE
    measurements: dict[str, Measurement] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)  # heading -> text or plain data
    proposed_patch: str | None = None  # a patch id that fixes the finding
    alternatives: list[str] = field(default_factory=list)  # patches tried in turn when the proposed one does not verify
    # a slower setup that avoids the optimisation the finding is about: tried when no fix verifies
    fallback_patch: str | None = None
    enables: str | list[str] | None = None  # patch ids the check verified as safe to train with (no finding)
    fix: FixRecord | None = None
    duration_s: float = 0.0
    figures: list[dict[str, Any]] = field(default_factory=list)  # the check's own plots (bar_figure), or notes
    version: int = 0  # the check's version (onboard.checks.base.Check.version); 0: a report that did not record it
    # with status SKIP: the check's probe does not fit the model, and what its training needs instead (an input
    # text data lacks, another objective), as the model's own signature or error says; the verdict is NOT_APPLICABLE
    needs: str | None = None
    # where the check ran: "slice" (the layer-complete slice, onboard.harness.slice) or "whole"; None: not run
    ran_on: str | None = None

    @property
    def fixed(self) -> bool:
        return self.fix is not None and self.fix.verified

    @property
    def blocking(self) -> bool:
        """True when this result keeps the model from being ready: a finding not fixed, or a crash."""
        return self.status in (Status.FAIL, Status.ERROR) and not self.fixed

    def measure(self, name: str, value: Any, unit: str = "", threshold: str | None = None, *,
                compare: str | None = None, limit: float | None = None, note: str = "") -> None:
        """A measurement; with `compare` and `limit` the bound it is judged against, as numbers (the text
        shown to people is made from them, plus `note`)."""
        if compare is not None and threshold is None:
            threshold = f"{compare} {limit:.4g}" + (f" {note}" if note else "")
        self.measurements[name] = Measurement(value, unit, threshold, limit, compare)


@dataclass
class RunReport:
    model: dict[str, Any]
    environment: dict[str, Any]
    checks: list[CheckResult]
    seed: int
    options: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    # name -> {value, unit, overridden, meaning}: every threshold the checks judged against
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] | None = None  # the config file the options came from: path, kind, notes
    schema_version: int = SCHEMA_VERSION

    @property
    def verdict(self) -> Verdict:
        if any(c.blocking and c.status is Status.FAIL for c in self.checks):
            return Verdict.NOT_READY
        if any(c.blocking for c in self.checks):
            return Verdict.INCONCLUSIVE
        if any(c.needs for c in self.checks):
            return Verdict.NOT_APPLICABLE
        if any(c.fixed for c in self.checks):
            return Verdict.READY_WITH_FIXES
        return Verdict.READY

    @property
    def verified_patches(self) -> list[str]:
        """Patches a training run should apply: verified fixes, then verified optimisations."""
        fixes = [c.fix.patch_id for c in self.checks if c.fixed]
        enabled = [p for c in self.checks if c.enables and c.status in (Status.PASS, Status.WARN)
                   for p in ([c.enables] if isinstance(c.enables, str) else c.enables)]
        return list(dict.fromkeys(fixes + enabled))

    @property
    def patch_options(self) -> dict[str, str]:
        """The choices checks made for the verified patches (MOE001: which experts implementation), by patch id."""
        verified = set(self.verified_patches)
        return {k: v for c in self.checks for k, v in (c.evidence.get("patch_options") or {}).items() if k in verified}

    @property
    def reason(self) -> str:
        """One line: each blocking finding with its message (the cause, in the check's words) and the fix that
        was tried; or, for a ready model, the patches that made it ready."""
        blocking = [c for c in self.checks if c.blocking]
        if not blocking:
            needs = [f"{c.code}: {c.needs}" for c in self.checks if c.needs]
            return "; ".join(needs) if needs else ", ".join(c.fix.patch_id for c in self.checks if c.fixed)
        parts = []
        for c in blocking:
            text = f"{c.code} {c.diagnosis or c.status.value}: {c.message}"
            if c.fix is not None:
                text += f" [{c.fix.patch_id} tried, not verified: {c.fix.error or c.fix.message_after}]"
            parts.append(text)
        return "; ".join(parts)

    @property
    def slice_text(self) -> str:
        """Where the checks ran, in one sentence: the slice's layer map and the checks it ran, or why there was
        none (reports before the slice say nothing)."""
        info = self.model.get("slice")
        if not info:
            return ""
        if "kept" not in info:
            return f"Every check ran on the whole model: {info.get('reason')}."
        layers = layer_groups(info["kept"], info["kinds"])
        on_slice = [c.code for c in self.checks if c.ran_on == "slice"]
        share = info["parameters"] / max(info["model_parameters"], 1)
        exact = (f", hidden states after its first {info['compared_layers']} layer(s) equal to the model's"
                 if info.get("compared_layers") else "")
        return (f"Layer-complete slice: layers {layers} of {info['total']} ({share:.0%} of the weights{exact}); "
                f"ran on it: {', '.join(on_slice) or 'none'}; the other checks ran on the whole model.")

    def exit_code(self, strict: bool = False) -> ExitCode:
        verdict = self.verdict
        if verdict is Verdict.INCONCLUSIVE:
            return ExitCode.ENVIRONMENT_ERROR
        if verdict is Verdict.NOT_APPLICABLE:
            return ExitCode.NOT_APPLICABLE
        if verdict is Verdict.NOT_READY or (strict and verdict is Verdict.READY_WITH_FIXES):
            return ExitCode.NOT_READY
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "verdict": self.verdict.value,
            "model": self.model,
            "environment": self.environment,
            "seed": self.seed,
            "options": self.options,
            "config": self.config,
            "thresholds": self.thresholds,
            "duration_s": round(self.duration_s, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "patches": self.verified_patches,
            "checks": [_check_to_dict(c) for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported report schema_version {data.get('schema_version')!r}")
        return cls(
            model=data["model"],
            environment=data["environment"],
            checks=[_check_from_dict(c) for c in data["checks"]],
            seed=data["seed"],
            options=data.get("options", {}),
            duration_s=data.get("duration_s", 0.0),
            timings=data.get("timings", {}),
            thresholds=data.get("thresholds", {}),
            config=data.get("config"),
        )


def layer_groups(kept: list[int], kinds: list[str]) -> str:
    """A slice's kept layers grouped by kind: `LlamaDecoderLayer: 0, 1` or `... (sliding_attention): 0, 1; ... (full_attention): 5`."""
    groups: dict[str, list[int]] = {}
    for index, kind in zip(kept, kinds):
        groups.setdefault(kind, []).append(index)
    return "; ".join(f"{kind}: {', '.join(map(str, idx))}" for kind, idx in groups.items())


def _measurements_to_dict(ms: dict[str, Measurement]) -> dict[str, Any]:
    return {k: m.to_dict() for k, m in ms.items()}


def _measurements_from_dict(data: dict[str, Any]) -> dict[str, Measurement]:
    return {k: Measurement(**v) for k, v in data.items()}


def _check_to_dict(c: CheckResult) -> dict[str, Any]:
    fix = None
    if c.fix is not None:
        fix = dataclasses.asdict(c.fix)
        fix["status_after"] = c.fix.status_after.value if c.fix.status_after else None
        fix["measurements_after"] = _measurements_to_dict(c.fix.measurements_after)
    return {
        "code": c.code,
        "name": c.name,
        "status": c.status.value,
        "message": c.message,
        "diagnosis": c.diagnosis,
        "measurements": _measurements_to_dict(c.measurements),
        "evidence": c.evidence,
        "proposed_patch": c.proposed_patch,
        "alternatives": c.alternatives,
        "fallback_patch": c.fallback_patch,
        "enables": c.enables,
        "fix": fix,
        "duration_s": round(c.duration_s, 3),
        "figures": c.figures,
        "version": c.version,
        "needs": c.needs,
        "ran_on": c.ran_on,
    }


def _check_from_dict(d: dict[str, Any]) -> CheckResult:
    fix = None
    if d.get("fix"):
        f = dict(d["fix"])
        f["status_after"] = Status(f["status_after"]) if f.get("status_after") else None
        f["measurements_after"] = _measurements_from_dict(f.get("measurements_after", {}))
        fix = FixRecord(**f)
    return CheckResult(
        code=d["code"],
        name=d["name"],
        status=Status(d["status"]),
        message=d["message"],
        diagnosis=d.get("diagnosis"),
        measurements=_measurements_from_dict(d.get("measurements", {})),
        evidence=d.get("evidence", {}),
        proposed_patch=d.get("proposed_patch"),
        alternatives=d.get("alternatives", []),
        fallback_patch=d.get("fallback_patch"),
        enables=d.get("enables"),
        fix=fix,
        duration_s=d.get("duration_s", 0.0),
        figures=d.get("figures", []),
        version=d.get("version", 0),
        needs=d.get("needs"),
        ran_on=d.get("ran_on"),
    )
