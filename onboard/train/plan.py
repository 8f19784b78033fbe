"""The training plan: how `onboard train` fits the step on the device, chosen by measuring, not by rule of thumb.

What it chooses, where the user left it open:
- gradient checkpointing: off, every n-th decoder layer (transformers' every_n_layers: the others keep their
  activations) or every layer. Recomputing a layer's forward costs about a third of its forward and backward,
  so the least checkpointing that fits is the fastest.
- the micro-batch: the asked samples per optimizer step, in one micro-batch, or split into k micro-batches with
  gradient accumulation (the same samples per optimizer step; GA001 verified that accumulation trains as one
  batch) when even full checkpointing does not fit.

How it measures. The memory a step needs beyond what is allocated now (weights, adapters) is the activations
autograd saves for backward, plus the optimizer's state, plus what backward needs on top while it runs. The
saved activations are counted exactly, on the training model (LoRA and the patches applied), by a forward of
packed rows of the real micro-batch's shape under torch.autograd.graph.saved_tensors_hooks: every tensor saved
for backward, each storage once; with checkpointing the inputs each checkpointed layer keeps for its recompute.
A forward at the full micro-batch length without checkpointing could itself run out of memory, so the probe
runs at three lengths up to PROBE_TOKENS and fits bytes = a + b*T + c*T^2 (c is 0 with the sdpa, flash or varlen
attention; eager attention keeps T x T scores), then reads the fit at the micro-batch's length. Backward's
transient need is taken as twice one layer's saved activations. The device's free memory is read with
torch.cuda.mem_get_info; the plan keeps MARGIN of it free.

Where it does not plan: on the CPU (no device memory to fit; checkpointing stays off, as the checks ran), when
the user chose checkpointing (--gradient-checkpointing / --no-gradient-checkpointing, a config file). When the check
report shows checkpointing changing the step (KERN001's checkpointing null not met), only plans without it are
considered.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession

PROBE_TOKENS = 2048  # the longest probe row: long enough to fit the curve, short enough to never run out
MARGIN = 0.10  # of the free memory, kept free (allocator fragmentation, the CUDA context's growth)
FIXED_RESERVE = 1 << 30  # bytes kept free besides the margin
RECOMPUTE_COST = 1 / 3  # a recomputed forward, as a share of a layer's forward and backward
SHORT_ROW = 2048  # a micro-batch shorter than this many tokens leaves a large GPU partly idle
SHORT_ROW_COST = 0.10  # the slow-down assumed for such a micro-batch


@dataclass
class Candidate:
    checkpointing: str  # "off", "every N", "full"
    every: int  # 0: off; 1: every layer; n: every n-th layer
    split: int  # micro-batches per asked micro-batch
    need_bytes: int
    cost: float  # relative step time, 1.0 = no checkpointing, one micro-batch
    fits: bool = False
    peak_bytes: int | None = None  # on CUDA: the peak of a real step under it, where it was tried


@dataclass
class Plan:
    planned: bool
    why: str
    checkpointing: bool | None = None
    checkpoint_every: int = 1
    split: int = 1
    free_bytes: int | None = None
    measured: dict = field(default_factory=dict)
    candidates: list[dict] = field(default_factory=list)

    def record(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        if not self.planned:
            return f"Plan: not planned ({self.why})"
        ckpt = "off" if not self.checkpointing else ("every layer" if self.checkpoint_every == 1
                                                     else f"every {self.checkpoint_every}th layer")
        chosen = next(c for c in self.candidates if c["chosen"])
        text = (f"Plan: checkpointing {ckpt}, {self.split} micro-batch{'es' if self.split > 1 else ''} per asked one; "
                f"needs {chosen['need_bytes'] / 2**30:.1f} of {self.free_bytes / 2**30:.1f} GiB free")
        return text + f" ({self.why})"


def saved_bytes(model, rows: list[list[int]], device, position_start: int = 0) -> int:
    """The bytes autograd keeps for backward in one training forward of `rows` packed in one row (position_ids
    restarting per sample, labels = input_ids), each storage counted once; with checkpointing, the inputs each
    checkpointed layer keeps for its recompute as well (the checkpoint keeps them, not autograd's hooks)."""
    from onboard.patches.base import unwrap

    input_ids, position_ids = _packed(rows, device, position_start)
    seen: dict[int, int] = {}
    keep: list = []  # the storages stay alive while counted: a freed address could be another tensor's

    def count(tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen and storage.device.type != "meta":
            seen[storage.data_ptr()] = storage.nbytes()
            keep.append(storage)

    def pack(tensor):
        if isinstance(tensor, torch.Tensor) and not isinstance(tensor, torch.nn.Parameter):
            count(tensor)
        return tensor

    handles = []
    base = unwrap(model)
    params = {p.data_ptr() for p in model.parameters()}
    for module in base.modules():
        if getattr(module, "gradient_checkpointing", False) is True and module.training:
            def inputs(_module, args, kwargs):
                for value in (*args, *kwargs.values()):
                    if isinstance(value, torch.Tensor) and value.data_ptr() not in params:
                        count(value)
            handles.append(module.register_forward_pre_hook(inputs, with_kwargs=True))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(input_ids=input_ids, position_ids=position_ids, labels=input_ids.clone(), use_cache=False)
        del out
        weights = sum(n for ptr, n in seen.items() if ptr in params)
        return sum(seen.values()) - weights
    finally:
        for handle in handles:
            handle.remove()


def _packed(rows: list[list[int]], device, position_start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids as one packed row: input_ids and position_ids restarting per sample."""
    ids = [t for row in rows for t in row]
    positions = [position_start + i for row in rows for i in range(len(row))]
    return torch.tensor([ids], device=device), torch.tensor([positions], device=device)


def fit_curve(points: list[tuple[int, int]]) -> Callable[[int], float]:
    """bytes(T) = a + b*T + c*T^2 through the probe's points (c >= 0; linear through two points)."""
    if len(points) < 3:
        (t1, y1), (t2, y2) = points[0], points[-1]
        slope = (y2 - y1) / max(t2 - t1, 1)
        return lambda t: y2 + slope * (t - t2)
    (t1, y1), (t2, y2), (t3, y3) = points[:3]
    c = ((y3 - y2) / (t3 - t2) - (y2 - y1) / (t2 - t1)) / (t3 - t1)
    c = max(c, 0.0)
    b = (y2 - y1) / (t2 - t1) - c * (t1 + t2)
    a = y1 - b * t1 - c * t1 * t1
    return lambda t: a + b * t + c * t * t


def candidates(layers: int, samples: int, tokens: int, activations: Callable[[int, int], float],
               fixed: int, everies=(0, 4, 2, 1), may_split: bool = True) -> list[Candidate]:
    """Every (checkpointing, split) a run could use, with the bytes it needs and its relative cost.
    activations(every, tokens): the saved bytes of one micro-batch of `tokens` (every 0: off, 1: full, n: every
    n-th layer); `everies`: the checkpointing choices (every n-th layer only where there are at least 2n layers)."""
    everies = [e for e in everies if e <= 1 or layers >= 2 * e]
    out = []
    split = 1
    while split <= (max(samples, 1) if may_split else 1):
        if samples % split:
            break
        micro = math.ceil(tokens / split)
        per_layer = activations(everies[0], micro) / max(layers, 1)  # a layer's own, at the least checkpointing
        for every in everies:
            saved = activations(every, micro)
            need = int(fixed + saved + 2 * per_layer)
            recomputed = 0 if every == 0 else 1 / every
            cost = (1 + RECOMPUTE_COST * recomputed) * (1 + (SHORT_ROW_COST if micro < SHORT_ROW else 0))
            name = "off" if every == 0 else ("full" if every == 1 else f"every {every}")
            out.append(Candidate(name, every, split, need, round(cost, 4)))
        split *= 2
    return out


def choose(cands: list[Candidate], free: int) -> Candidate | None:
    """The cheapest candidate that fits `free` bytes less the margin; ties go to fewer micro-batches."""
    budget = free * (1 - MARGIN) - FIXED_RESERVE
    for c in cands:
        c.fits = c.need_bytes <= budget
    fitting = [c for c in cands if c.fits]
    return min(fitting, key=lambda c: (c.cost, c.split, c.every == 0)) if fitting else None


def plan_training(session: ModelSession, model, lengths: list[int], samples_per_micro: int, *, report=None,
                  free_memory: Callable[[], int | None] | None = None, may_split: bool = True) -> Plan:
    """The plan for training `model` (LoRA and patches applied) on micro-batches of `samples_per_micro` samples
    of these lengths (the longest samples together: the worst micro-batch). `free_memory` reads the device's free
    bytes (default torch.cuda.mem_get_info; tests pass their own reading)."""
    from onboard.harness.training import renamed_to_activation
    from onboard.patches.speed import repeated_blocks

    if session.setup.gradient_checkpointing is not None:
        return Plan(False, "checkpointing chosen by the setup", checkpointing=session.setup.gradient_checkpointing,
                    checkpoint_every=session.setup.checkpoint_every)
    reading = free_memory() if free_memory is not None else _cuda_free(session.device)
    if reading is None:
        return Plan(False, f"no device memory to plan for on {session.device.type}: checkpointing off",
                    checkpointing=False)
    null = _checkpointing_null(report)
    worst = sorted(lengths, reverse=True)[:samples_per_micro]
    tokens = sum(worst)
    layers = len(repeated_blocks(model))
    # checkpointing that changes the step (KERN001's null not met) is not a plan: off, split if need be
    everies = (0,) if null is False else tuple(e for e in (0, 1, 2, 4) if e in (0, 1) or renamed_to_activation())
    fit = {every: _probe(session, model, worst, every) for every in everies}
    fixed = _optimizer_bytes(model)
    may_split = may_split and _accumulation_verified(report)
    cands = candidates(layers, samples_per_micro, tokens, lambda every, t: fit[every](t), fixed, everies=tuple(fit),
                       may_split=may_split)
    best = choose(cands, reading)
    if best is not None and session.device.type == "cuda":
        best = _confirmed(session, model, worst, cands, reading, fixed)
    measured = {"micro_batch_tokens": tokens, "layers": layers, "optimizer_bytes": fixed,
                **{f"saved_bytes_{'off' if e == 0 else 'every_' + str(e)}": int(f(tokens)) for e, f in fit.items()}}
    if best is None:
        best = min(cands, key=lambda c: (c.peak_bytes is None, c.need_bytes))
        why = "nothing fits the free memory: the smallest plan, expect an out-of-memory error"
    else:
        why = "the least recomputation that fits" if best.split == 1 else \
            "one micro-batch does not fit: split, gradient accumulation keeps the samples per step"
        if null is False:
            why += "; KERN001 found checkpointing changing the step: planned without it"
    return Plan(True, why, checkpointing=best.every != 0, checkpoint_every=max(best.every, 1), split=best.split,
                free_bytes=reading, measured=measured,
                candidates=[asdict(c) | {"chosen": c is best} for c in cands])


def _confirmed(session: ModelSession, model, worst: list[int], cands: list[Candidate], free: int,
               fixed: int) -> Candidate | None:
    """On CUDA the estimate orders the candidates and a real step decides: the fitting candidates, cheapest first, each
    run once (forward and backward of a micro-batch of the worst samples, its checkpointing on) until one's peak, with
    the optimizer's state, fits the budget. The count of saved tensors misses what backward allocates on top (and a
    compiled layer's own buffers): measured on an H100, a plan the count alone chose ran out of memory at step 0."""
    budget = free * (1 - MARGIN) - FIXED_RESERVE - fixed
    for cand in sorted([c for c in cands if c.fits], key=lambda c: (c.cost, c.split)):
        size = max(1, len(worst) // cand.split)
        peak = _peak_of_step(session, model, sorted(worst, reverse=True)[:size], cand.every)
        cand.peak_bytes = peak
        if peak is not None and peak <= budget:
            return cand
        cand.fits = False
    return None


def _peak_of_step(session: ModelSession, model, lengths: list[int], every: int) -> int | None:
    """The CUDA memory one forward and backward of these samples packed in a row takes beyond what is allocated
    now (None: out of memory)."""
    import gc

    from onboard.patches.base import unwrap

    vocab = unwrap(model).get_input_embeddings().num_embeddings
    input_ids, position_ids = _packed(_rows_of(lengths, sum(lengths), vocab, session.seed), session.device,
                                      session.position_start)
    torch.cuda.synchronize(session.device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(session.device)
    torch.cuda.reset_peak_memory_stats(session.device)
    try:
        with _as_planned(session, model, every):
            model(input_ids=input_ids, position_ids=position_ids, labels=input_ids, use_cache=False).loss.backward()
        return torch.cuda.max_memory_allocated(session.device) - base
    except torch.OutOfMemoryError:
        return None
    finally:  # an out-of-memory error's traceback holds the step's tensors: let them go before the next try
        model.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()


def _cuda_free(device) -> int | None:
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def _checkpointing_null(report) -> bool | None:
    """Whether the check report's KERN001 measured checkpointing giving the step's own math: every measurement of
    the checkpointed plain run within its limit (None: not measured, the setup did not checkpoint)."""
    if report is None:
        return None
    kern = next((c for c in report.checks if c.code == "KERN001"), None)
    if kern is None:
        return None
    judged = [m.within for name, m in kern.measurements.items() if name.startswith("checkpointing.")]
    judged = [w for w in judged if w is not None]
    if not judged:
        return None
    return all(judged)


def _accumulation_verified(report) -> bool:
    """Whether GA001 found gradient accumulation training as one batch (PASS, or its fix verified)."""
    if report is None:
        return False
    ga = next((c for c in report.checks if c.code == "GA001"), None)
    return ga is not None and (ga.status.value == "PASS" or bool(ga.fix and ga.fix.verified))


def _optimizer_bytes(model) -> int:
    """AdamW's two fp32 moments and the fp32 gradient of every trainable weight."""
    return sum(p.numel() * 12 for p in model.parameters() if p.requires_grad)


def _probe(session: ModelSession, model, worst: list[int], every: int) -> Callable[[int], float]:
    """The saved bytes of a micro-batch as a function of its tokens, under checkpointing `every` (0: off),
    fitted on probe rows of up to PROBE_TOKENS tokens shaped as the worst micro-batch."""
    from onboard.patches.base import unwrap

    top = min(sum(worst), PROBE_TOKENS)
    vocab = unwrap(model).get_input_embeddings().num_embeddings
    points = []
    with _as_planned(session, model, every):
        for length in sorted({max(8, top // 4), max(8, top // 2), top}):
            rows = _rows_of(worst, length, vocab, session.seed)
            points.append((length, saved_bytes(model, rows, session.device, session.position_start)))
    return fit_curve(points)


@contextmanager
def _as_planned(session: ModelSession, model, every: int):
    """The model in eval mode under checkpointing every `every`-th layer (0: off), as a probe runs it; every
    module's mode put back after."""
    from onboard.harness.samemath import as_trained, modes_of, restore_modes

    modes = modes_of(model)
    try:
        model.eval()
        with as_trained(session, model, every != 0, every=every or None):
            yield
    finally:
        restore_modes(modes)


def _rows_of(worst: list[int], length: int, vocab: int, seed: int) -> list[list[int]]:
    """Samples of the worst micro-batch's proportions, scaled to `length` tokens in all, of random token ids (an
    MoE routes by the tokens: one id repeated would send every token to the same experts)."""
    total = sum(worst)
    sizes = [max(1, round(n * length / total)) for n in worst]
    sizes[-1] = max(1, sizes[-1] + length - sum(sizes))
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in sizes]


__all__ = ["Candidate", "Plan", "candidates", "choose", "fit_curve", "plan_training", "saved_bytes"]
