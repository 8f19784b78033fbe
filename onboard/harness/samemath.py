"""Same math: does another way of running a model's training step (a speed lever, an experts kernel, the
compiled step) give the loss and the adapter gradients of the plain run? KERN001, MOE001 and COMPILE001 judge
with this one rule.

In fp32 the other run must give the plain loss within `rtol` (relative) and the gradients within 10 times that.
In bf16/fp16 two right computations differ by rounding, so each run is judged by its distance from the same
model run once in fp32 (the weights cast up for that pass, then back: bf16 -> fp32 -> bf16 is exact): the other
run may be at most `factor` times as far from fp32 as the plain run is, and never needs to be closer than the
fixed tolerances (rtol for the loss, 10 x rtol for the gradients).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from onboard.harness.forward import PackedBatch, grad_rel_diff

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession


def shortest_row(session: ModelSession, n: int, start: int = 0) -> PackedBatch | None:
    """The labelled samples `start`..`start + n` of the session's data, shortest first, packed into one row as
    the packing collator packs them (position_ids restarting, no mask); None when there are none."""
    from onboard.harness.data import pack

    group = sorted((ex for ex in session.examples if ex.n_trained), key=len)[start:start + n]
    if not group:
        return None
    return PackedBatch.from_rows(pack(group, sum(len(ex) for ex in group), session.position_start)[:1],
                                 session.device, session.pad_id)


def loss_and_grads(model, batch: PackedBatch, owner=None) -> tuple[float, dict[str, torch.Tensor], float]:
    """One forward and backward of a packed row: the loss, every trainable gradient (fp32 copies) named as in
    `owner` (default: `model`; a compiled module of `owner` runs it), and the seconds."""
    owner = model if owner is None else owner
    model.zero_grad(set_to_none=True)
    if batch.input_ids.is_cuda:
        torch.cuda.synchronize(batch.input_ids.device)
    start = time.perf_counter()
    out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, labels=batch.labels, use_cache=False)
    out.loss.backward()
    if batch.input_ids.is_cuda:
        torch.cuda.synchronize(batch.input_ids.device)
    seconds = time.perf_counter() - start
    grads = {n: p.grad.detach().float().clone() for n, p in owner.named_parameters() if p.grad is not None}
    owner.zero_grad(set_to_none=True)
    return float(out.loss.detach()), grads, seconds


def distance(loss, grads, ref_loss, ref_grads) -> tuple[float, float]:
    return abs(loss - ref_loss) / max(abs(ref_loss), 1e-12), grad_rel_diff(ref_grads, grads)


@contextmanager
def fp32_weights(model):
    """Every floating weight of `model` in fp32 inside the block, cast back after it (bf16 -> fp32 -> bf16 is
    exact). Yields False, changing nothing, when the model is fp32 already."""
    saved = {n: p.dtype for n, p in model.named_parameters() if p.is_floating_point()}
    if set(saved.values()) <= {torch.float32}:
        yield False
        return
    device = next(model.parameters()).device
    try:
        for p in model.parameters():
            if p.is_floating_point():
                p.data = p.data.float()
        yield True
    finally:
        for n, p in model.named_parameters():
            if n in saved:
                p.data = p.data.to(saved[n])
        if device.type == "cuda":
            torch.cuda.empty_cache()


def fp32_reference(model, batch):
    """The plain run with every floating weight in fp32 (then cast back exactly), outside any autocast, or None when
    the model is fp32 already or the fp32 copy does not fit."""
    try:
        device = next(model.parameters()).device.type
        with fp32_weights(model) as cast, torch.autocast(device, enabled=False):
            if not cast:
                return None
            loss, grads, _ = loss_and_grads(model, batch)
            return loss, grads
    except torch.OutOfMemoryError:
        return None


def modes_of(model) -> list[tuple[torch.nn.Module, bool]]:
    """Every module with its training flag: put back with `restore_modes` (model.train(flag) would set all of
    them to the wrapper's flag, and a PEFT wrapper is in training mode while the model inside it is not)."""
    return [(m, m.training) for m in model.modules()]


def restore_modes(modes: list[tuple[torch.nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training


@contextmanager
def as_trained(session: ModelSession, model, checkpointed: bool, input_grads: bool = True, every: int | None = None):
    """A probe's step as training runs it: under the Trainer's mixed precision (autocast in bf16/fp16 on CUDA) and,
    when `checkpointed`, under the setup's gradient checkpointing (non-reentrant, every n-th layer as asked).
    transformers checkpoints a layer only in training mode and the probes run in eval mode (no dropout: one
    function every run), so only the modules that checkpoint are put in training mode, their children staying in
    eval; the global seed is set on entry, so dropout a layer applies itself draws the same mask every run.
    `input_grads`: see enable_checkpointing; `every`: checkpoint every n-th layer instead of the setup's choice."""
    from onboard.harness.training import checkpoint_kwargs, enable_checkpointing, mixed_precision, undo_checkpointing
    from onboard.patches.base import unwrap

    flags: dict = {}
    torch.manual_seed(session.seed)
    try:
        if checkpointed:
            enable_checkpointing(model, checkpoint_kwargs(session, every), input_grads)
            for module in unwrap(model).modules():
                if getattr(module, "gradient_checkpointing", False) is True:
                    flags[module] = module.training
                    module.training = True
        dtype = mixed_precision(session)
        with torch.autocast(session.device.type, dtype=dtype) if dtype is not None else nullcontext():
            yield
    finally:
        for module, training in flags.items():
            module.training = training
        if checkpointed:
            undo_checkpointing(model)


@torch.no_grad()
def randomise_lora_b(model, seed: int) -> None:
    """Small random adapter B matrices: at their zero start the A matrices get no gradient to compare."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if param.requires_grad and "lora_B" in name:
            param.copy_(torch.randn(param.shape, generator=gen).to(param.device, param.dtype) * 1e-2)


@dataclass
class SameMath:
    """The plain run another way of running must reproduce, and the limits it is judged against."""

    loss: float
    grads: dict[str, torch.Tensor]
    seconds: float
    rtol: float
    factor: float
    reference: tuple[float, dict[str, torch.Tensor]] | None = None  # the fp32 run, in bf16/fp16
    plain_rel: float = 0.0
    plain_grad_rel: float = 0.0

    @classmethod
    def measure(cls, model, batch: PackedBatch, rtol: float, factor: float, res=None) -> SameMath:
        """The plain run (and in bf16/fp16 its fp32 reference), recorded on `res` when given."""
        return cls.of_run(loss_and_grads(model, batch), model, batch, rtol, factor, res)

    @classmethod
    def of_run(cls, run, model, batch: PackedBatch, rtol: float, factor: float, res=None) -> SameMath:
        """`run` (loss, grads, seconds: the plain run, already made) with its fp32 reference."""
        loss, grads, seconds = run
        plain = cls(loss, grads, seconds, rtol, factor, fp32_reference(model, batch))
        if plain.reference is not None:
            plain.plain_rel, plain.plain_grad_rel = distance(loss, grads, *plain.reference)
        if res is not None:
            res.measure("loss_plain", round(loss, 6), "nats")
            if plain.reference is not None:
                res.measure("plain_vs_fp32_loss_rel", float(f"{plain.plain_rel:.3g}"), "",
                            "the plain run's own rounding: another run may be this far from fp32, times the factor")
                res.measure("plain_vs_fp32_grad_rel", float(f"{plain.plain_grad_rel:.3g}"), "")
            res.measure("seconds_plain", round(seconds, 4), "s", "one forward and backward, informative")
        return plain

    def judge(self, res, prefix: str, loss: float, grads: dict[str, torch.Tensor]) -> tuple[bool, float, float]:
        """Whether (loss, grads) is the plain math; measurements named `prefix.*` go on `res`.
        Returns (same, loss distance, gradient distance), both from the plain run."""
        rel, grad_rel = distance(loss, grads, self.loss, self.grads)
        if self.reference is None:  # fp32: the plain run is the reference
            res.measure(f"{prefix}.loss_rel_diff", float(f"{rel:.3g}"), "", compare="<=", limit=self.rtol)
            res.measure(f"{prefix}.grad_rel_diff", float(f"{grad_rel:.3g}"), "", compare="<=", limit=self.rtol * 10)
            return rel <= self.rtol and grad_rel <= self.rtol * 10, rel, grad_rel
        res.measure(f"{prefix}.loss_rel_diff", float(f"{rel:.3g}"), "", "against the plain run")
        res.measure(f"{prefix}.grad_rel_diff", float(f"{grad_rel:.3g}"), "", "against the plain run")
        ref_rel, ref_grad_rel = distance(loss, grads, *self.reference)
        loss_limit = max(self.factor * self.plain_rel, self.rtol)
        grad_limit = max(self.factor * self.plain_grad_rel, self.rtol * 10)
        res.measure(f"{prefix}.vs_fp32_loss_rel", float(f"{ref_rel:.3g}"), "", compare="<=",
                    limit=float(f"{loss_limit:.3g}"))
        res.measure(f"{prefix}.vs_fp32_grad_rel", float(f"{ref_grad_rel:.3g}"), "", compare="<=",
                    limit=float(f"{grad_limit:.3g}"))
        return ref_rel <= loss_limit and ref_grad_rel <= grad_limit, rel, grad_rel


def first_line(exc: BaseException, width: int = 160) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:width]}"
