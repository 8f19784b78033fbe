"""The numbers the checks judge against: one named table of defaults, overridable from a config file.

A check asks its session for a threshold by name (`session.threshold("packing.tolerance")`); tolerances
that depend on precision have one value per dtype. The report records every value used.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Mapping

from onboard.harness.errors import BadInput

DTYPES = ("float32", "bfloat16", "float16")
Value = float | dict[str, float]  # one number, or one per dtype (missing dtypes: "other")


@dataclass(frozen=True)
class Threshold:
    name: str  # check name, dot, what it bounds
    default: Value
    unit: str
    meaning: str


def _per_dtype(fp32: float, bf16: float, fp16: float, other: float) -> dict[str, float]:
    return {"float32": fp32, "bfloat16": bf16, "float16": fp16, "other": other}


DEFAULTS: dict[str, Threshold] = {t.name: t for t in (
    Threshold("attention.loss_rtol", _per_dtype(1e-4, 2e-2, 2e-2, 2e-2), "relative",
              "ATTN001: loss with the training backend vs eager attention"),
    # a causal model's earlier predictions do not move at all when later tokens change (exact 0)
    Threshold("attention.future_tolerance", _per_dtype(1e-5, 1e-3, 1e-3, 1e-3), "nats",
              "ATTN001: how far earlier log-probabilities may move when the later tokens of a sample change"),
    Threshold("cce.loss_rtol", _per_dtype(1e-4, 1e-2, 5e-3, 1e-2), "relative",
              "CCE001: fused loss vs the plain loss; gradients are allowed 10 times this"),
    Threshold("cce.min_saving_ratio", 0.5, "measured/predicted",
              "CCE001 (CUDA only): peak-memory saving measured over the saving predicted"),
    Threshold("grad_accum.loss_rtol", _per_dtype(1e-4, 2e-2, 2e-2, 2e-2), "relative",
              "GA001: accumulated vs one-batch loss; gradients are allowed 10 times this"),
    Threshold("initial_loss.random_fraction", 0.8, "x ln V",
              "LOSS001: a loss at or above this fraction of ln(vocab) is a model predicting at random"),
    Threshold("initial_loss.suspect_loss", 3.0, "nats",
              "LOSS001: a pretrained model's SFT loss above this is WARN"),
    # an isolated packed sample moves by exactly 0 when another sample of its row changes (masked keys add
    # exact zeros); leaks moved 3e-3 to 1.0 nats on tiny random models (CPU, fp32)
    Threshold("packing.tolerance", _per_dtype(1e-5, 1e-3, 1e-3, 1e-3), "nats",
              "PACK001: largest move of another sample's log-probabilities when one sample of a packed row changes"),
    # a packed sample's token losses against the sample alone: the same sample at another offset of a longer row
    # rounds otherwise, by 5e-7 on tiny models and 1.4e-5 on pretrained Gemma 3 270M in fp32 (CPU), 4.5e-4 on tiny
    # Gemma 3 in bf16 while its first sample moved 4.3e-6, so the first sample's shift alone is no floor; positions
    # over the row cost 0.3-0.6 nats on tiny random models (Bart, XGLM, fault:pack-positions)
    Threshold("packing.harm_tolerance", _per_dtype(1e-3, 5e-2, 5e-2, 5e-2), "nats",
              "PACK001: the least floor of a later packed sample's token losses against the sample alone"),
    # fp32 rounds a token's loss by 1e-5 at another row length (pretrained Gemma 3 270M); bf16 by up to 0.1 nats
    # (an 8B shape on an H200), which leaves no bound the first sample's own shift could be judged against there
    Threshold("packing.row_noise", _per_dtype(1e-3, 1e9, 1e9, 1e9), "nats",
              "PACK001: the most a packed row's first sample (which sees no other) may move against itself alone"),
    Threshold("packing.control_factor", 4.0, "x control",
              "PACK001: the tolerance is at least this many times the control (a later sample changed)"),
    # the same attention computed another way: fp32 agrees to ~1e-7 (tiny models, CPU)
    Threshold("kernels.loss_rtol", _per_dtype(1e-5, 1e-2, 1e-2, 1e-2), "relative",
              "KERN001: a speed lever's loss vs the plain model's on a packed row; gradients are allowed 10 times this"),
    Threshold("kernels.rounding_factor", 2.0, "x plain",
              "KERN001 in bf16/fp16: a lever's distance from fp32 may be this many times the plain run's"),
    # dynamo + AOTAutograd on the CPU gave eager's loss and gradients exactly; Inductor within 5e-7 (tiny Llama, fp32)
    Threshold("compile.loss_rtol", _per_dtype(1e-5, 1e-2, 1e-2, 1e-2), "relative",
              "COMPILE001: the compiled step's loss vs eager's; gradients are allowed 10 times this (bf16/fp16: "
              "judged against the fp32 run, as KERN001)"),
    # FSDP2 over 2 gloo processes gave one process's loss, gradients, update and logits exactly (24 tiny
    # architectures and SmolLM2-135M, fp32 CPU); bf16 reduce-scatters round
    Threshold("fsdp.rtol", _per_dtype(1e-5, 1e-2, 1e-2, 1e-2), "relative",
              "FSDP001: the sharded step's loss vs one process's; gradients, update and logits are allowed 10 times this"),
    Threshold("compile.max_graph_breaks", 0.0, "breaks",
              "COMPILE001: graph breaks in the compiled training forward (a healthy decoder compiles in one graph)"),
    Threshold("compile.max_recompiles", 0.0, "graphs",
              "COMPILE001: graphs compiled for a third row length, after the one dynamic-shape recompile"),
    # fp32: the step's loss and gradients differ from the samples run one by one by rounding only (tiny models and
    # SmolLM2-135M / Gemma-3-270m on the CPU: loss <= 1e-6, gradients <= 1e-5 relative); a window lost shows at 1e-2
    Threshold("train_step.rounding_factor", 2.0, "x reference",
              "TRAIN001 in bf16/fp16: the step may be this many times as far from the fp32 reference as the samples "
              "one by one in the same dtype are"),
    Threshold("train_step.rounding_floor", _per_dtype(1e-5, 1e-3, 1e-3, 1e-3), "relative",
              "TRAIN001 in bf16/fp16: the least limit of the step's loss distance from the fp32 reference (gradients "
              "10 times this)"),
    Threshold("train_step.loss_rtol", _per_dtype(1e-5, 2e-2, 2e-2, 2e-2), "relative",
              "TRAIN001: the packed training step's loss vs the samples run one by one; adapter gradients are "
              "allowed 10 times this"),
)}


class Thresholds:
    """The defaults with a config file's overrides; `get(name, dtype)` is what a check judges against."""

    def __init__(self, overrides: Mapping[str, Any] | None = None, source: str | None = None):
        self.source = source
        self.overrides: dict[str, Value] = {}
        for name, value in _flatten(overrides or {}).items():
            self.overrides[name] = _validated(name, value, source)

    def get(self, name: str, dtype: str) -> float:
        value = self.overrides.get(name, DEFAULTS[name].default)
        if isinstance(value, dict):
            default = DEFAULTS[name].default
            fallback = default.get(dtype, default["other"]) if isinstance(default, dict) else default
            return float(value.get(dtype, value.get("other", fallback)))
        return float(value)

    def resolved(self, dtype: str) -> dict[str, dict[str, Any]]:
        """Every threshold as used at `dtype`, for the report."""
        return {
            name: {"value": self.get(name, dtype), "unit": t.unit, "overridden": name in self.overrides,
                   "meaning": t.meaning}
            for name, t in DEFAULTS.items()
        }


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"packing": {"tolerance": 1e-3}} and {"packing.tolerance": 1e-3} both give packing.tolerance;
    a table whose keys are dtypes is a per-dtype value, not a level of names."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not set(value) <= {*DTYPES, "other"}:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _validated(name: str, value: Any, source: str | None) -> Value:
    where = f"{source}: " if source else ""
    if name not in DEFAULTS:
        close = difflib.get_close_matches(name, DEFAULTS, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(DEFAULTS)}"
        raise BadInput(f"{where}unknown threshold {name!r}{hint}")
    values = value if isinstance(value, Mapping) else {"all": value}
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise BadInput(f"{where}threshold {name} ({key}) must be a non-negative number, not {v!r}")
    return {k: float(v) for k, v in value.items()} if isinstance(value, Mapping) else float(value)
