"""MOE001: each experts implementation gives eager's loss and adapter gradients, and every routed expert's
adapter learns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contextlib import nullcontext

import torch

from onboard.checks.base import SEQ2SEQ_NOT_PROBED, Check, FixAvailability
from onboard.harness.result import Status
from onboard.harness.samemath import (SameMath, first_line, loss_and_grads, modes_of, randomise_lora_b,
                                      restore_modes, shortest_row)
from onboard.harness.training import restore_parameters
from onboard.patches import ids
from onboard.patches.moe import current, experts_modules, offered, set_implementation

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession

ROW_SAMPLES = 4  # the shortest samples, packed into one row as training packs them
CHECK_ADAPTER = "onboard_experts"  # the adapter on the experts added for the check when training's LoRA has none


class MoeCheck(Check):
    """What it does:
    For a mixture-of-experts model whose fused experts transformers dispatches through its experts interface
    (`experts_implementation`: eager, batched_mm, grouped_mm, and kernels that need a library, deepgemm and
    sonicmoe), runs one forward and backward of a packed row (the 4 shortest samples, as the packing collator
    gives them) with each implementation the installed transformers offers, and compares the loss and the
    gradient of every adapter weight with `eager`'s (the model's own loop over experts). The adapters are on the
    experts too: training's LoRA where it reaches them (PEFT's target_parameters, which all-linear uses for
    the experts of Qwen3-MoE, Mixtral, OLMoE, DeepSeek-V3), else an adapter on the expert weights added for the
    check and removed after. The adapters' B matrices are set to small random values for the comparison (at
    their zero start A gets no gradient) and put back after; the model is in eval mode (no dropout). The limits
    are KERN001's (onboard.harness.samemath): in fp32 the loss within kernels.loss_rtol (1e-5 relative) and the
    gradients within 10 times that; in bf16/fp16 each run at most kernels.rounding_factor (2) times as far from
    the fp32 run as eager is.
    It also counts, per expert, the routed tokens the loss depends on (the experts module's top_k_index, kept
    where the gradient of the module's output row is not zero: the last token of a sample, or one no labelled
    token attends to, gives its expert no gradient, rightly), and asks of each implementation that every expert
    with such a token gets a gradient on its adapter: with B random that gradient is non-zero, so zero is a
    clean null. An expert that got no token in a check-sized batch is not a fault (a healthy router need not
    reach every expert on a few hundred tokens): it is counted, not judged.
    On CUDA each implementation's step is timed (after a first, untimed call); the fastest verified one is
    chosen for training. On the CPU the implementation the model loaded with is kept when verified.

    Why it matters:
    The fused expert kernels are where a new MoE architecture silently trains the wrong thing: grouped_mm
    on transposed expert weights when 2 x intermediate = hidden (unsloth-zoo#849), expert adapters that
    receive no gradient (unsloth PR #11014). transformers loads a model with grouped_mm where torch has it,
    so the kernel that trains is not the model's reference code.

    Failure modes:
    FM-MOE-KERNEL: the implementation the model runs with gives another loss or other gradients than eager:
    FAIL. An implementation the model does not run with that differs is left off and named, not a finding.
    FM-MOE-LORA: an expert that got tokens gets no adapter gradient under the implementation in use: its
    adapter never learns: FAIL. Under eager itself (the model's own experts code) there is no fix.

    Fix:
    moe.experts_implementation switches the model to the fastest implementation verified here (on the CPU, the
    first verified in the order eager, batched_mm, grouped_mm, ... when the one in use fails); verified by
    re-running the check. When the one in use passes and a faster one is verified (CUDA), the patch is listed
    for training with its choice (the report's patch_options), and `onboard train` applies it.
    Implementations that need a library or CUDA that is not here are reported as not applicable.
    """

    code = "MOE001"
    runs_on = "slice"
    version = 2  # 2: not probed for seq2seq (SKIP)
    name = "experts"
    summary = "every experts implementation gives eager's loss and adapter gradients; routed experts' adapters learn"
    requires = ("LORA001", "PACK001")
    fix_availability = FixAvailability.SOMETIMES
    needs_labels = True

    def run(self, session: ModelSession):
        model = session.train_model
        modules = experts_modules(model)
        if not modules:
            return self.result(Status.SKIP, "no experts module that transformers dispatches through its experts "
                                            "interface (not a mixture-of-experts model, or its experts are its own code)")
        if session.seq2seq:
            return self.result(Status.SKIP, SEQ2SEQ_NOT_PROBED)
        batch = shortest_row(session, ROW_SAMPLES)
        in_use = current(model)
        res = self.result(Status.PASS, "")
        res.measure("packed_samples", int((batch.sample.unique() >= 0).sum()), "samples",
                    f"{batch.input_ids.shape[1]} tokens in one row")
        res.measure("experts_modules", len(modules), "", type(modules[0][1]).__name__)
        res.measure("implementation_in_use", in_use, "", "what the model loaded with: what trains without this check")
        counts: dict[int, torch.Tensor] = {}
        hooks = []
        for _, module in modules:
            pre, post = _counter(counts, module)
            hooks += [module.register_forward_pre_hook(pre, with_kwargs=True),
                      module.register_forward_hook(post, with_kwargs=True)]
        added = _add_expert_adapter(model, session) if not _expert_lora_layers(model) else None
        if added:
            res.measure("expert_lora", "added for the check", "", "training's LoRA leaves the experts out (LORA001): "
                        "an adapter on the expert weights was added for this check")
        elif _expert_lora_layers(model):
            res.measure("expert_lora", "training's LoRA", "", "the adapters training trains")
        else:
            res.measure("expert_lora", "none", "", "PEFT would not put an adapter on these expert weights: the "
                        "experts' adapter gradients are not judged")
        saved = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        modes = modes_of(model)
        runs: dict[str, tuple] = {}
        skipped: dict[str, str] = {}
        try:
            randomise_lora_b(model, session.seed)
            model.eval()
            layers = _expert_lora_layers(model)
            with set_implementation(model, "eager"):
                loss_and_grads(model, batch)  # a first call tunes: not timed
                counts.clear()
                run = loss_and_grads(model, batch)
                routed = {k: v.clone() for k, v in counts.items()}  # what the router sent, in the judged run
                plain = SameMath.of_run(run, model, batch, session.threshold("kernels.loss_rtol"),
                                        session.threshold("kernels.rounding_factor"), res)
            runs["eager"] = (True, _unlearning(layers, routed, plain.grads), plain.seconds)
            for name in offered():
                if name == "eager":
                    continue
                try:
                    # the one in use runs as the model has it (a composite model may refuse a switch to it by name)
                    with nullcontext() if name == in_use else set_implementation(model, name):
                        loss_and_grads(model, batch)
                        counts.clear()
                        loss, grads, seconds = loss_and_grads(model, batch)
                        routed_here = {k: v.clone() for k, v in counts.items()}
                except Exception as exc:  # noqa: BLE001 - a kernel that cannot run here (no library, no CUDA)
                    skipped[name] = first_line(exc)
                    res.measure(f"{name}", "not applicable", "", skipped[name])
                    continue
                same, _, _ = plain.judge(res, name, loss, grads)
                runs[name] = (same, _unlearning(layers, routed_here, grads), seconds)
                res.measure(f"{name}.seconds", round(seconds, 4), "s", "one forward and backward, informative")
        finally:
            for hook in hooks:
                hook.remove()
            restore_parameters(model, saved)
            if added:
                added()
            restore_modes(modes)
        res.measure("eager.seconds", round(runs["eager"][2], 4), "s", "one forward and backward, informative")
        _routing(res, modules, routed)
        if skipped:
            res.evidence["not_applicable"] = skipped
        dead = {name: run[1] for name, run in runs.items() if run[1]}
        if dead:
            res.evidence["experts_without_adapter_gradient"] = {k: v[:20] for k, v in dead.items()}
        if dead.get("eager"):
            res.status, res.diagnosis = Status.FAIL, "FM-MOE-LORA"
            res.message = (f"{len(dead['eager'])} routed experts get no adapter gradient under eager, the model's own "
                           f"experts code (first: {dead['eager'][0]}): their adapters never learn")
            return res
        if in_use not in runs:  # onboard could not run the model's own implementation: it cannot judge it
            res.status = Status.SKIP
            res.message = f"{in_use}, the implementation in use, could not be run here: {skipped.get(in_use, '?')}"
            return res
        verified = [name for name, (same, unlearning, _) in runs.items() if same and not unlearning]
        left_off = {name: ("adapters of routed experts get no gradient" if runs[name][1] else "other loss or gradients")
                    for name in runs if name not in verified}
        if left_off:
            res.evidence["left_off"] = left_off
        fastest = min(verified, key=lambda name: runs[name][2])
        on_cuda = batch.input_ids.is_cuda
        choice = fastest if on_cuda else (in_use if in_use in verified else verified[0])
        res.measure("chosen", choice, "", "fastest verified (CUDA)" if on_cuda else
                    "the one in use when verified (CPU: times of a tiny run say nothing)")
        summary = ", ".join(f"{n} ({runs[n][2] * 1000:.1f} ms)" for n in verified)
        if in_use not in verified:
            res.status, res.proposed_patch = Status.FAIL, ids.MOE_EXPERTS_IMPLEMENTATION
            res.diagnosis = "FM-MOE-LORA" if runs.get(in_use, (0, 0))[1] else "FM-MOE-KERNEL"
            what = (f"adapters of {len(runs[in_use][1])} routed experts get no gradient (first: {runs[in_use][1][0]})"
                    if res.diagnosis == "FM-MOE-LORA" else "it gives other loss or gradients than eager")
            res.message = f"{in_use}, the implementation in use: {what}; verified: {summary}; {choice} proposed"
            res.evidence["patch_options"] = {ids.MOE_EXPERTS_IMPLEMENTATION: choice}
            return res
        res.message = f"verified: {summary}; training runs {choice}"
        if left_off:
            res.message += "; left off: " + ", ".join(f"{k} ({v})" for k, v in left_off.items())
        if choice != in_use:
            res.enables = ids.MOE_EXPERTS_IMPLEMENTATION
            res.evidence["patch_options"] = {ids.MOE_EXPERTS_IMPLEMENTATION: choice}
        return res


def _counter(counts: dict[int, torch.Tensor], module):
    """Hooks that add, per expert, the routed tokens whose expert output reaches the loss (its gradient row is
    not zero): a token the loss does not depend on (the last of a sample, one no labelled token attends to)
    gives its expert no gradient, rightly. Returns (pre-hook, forward hook): the pre-hook reads top_k_index,
    the forward hook puts a gradient hook on the output."""
    pending: list[torch.Tensor] = []

    def pre(_module, args, kwargs):
        index = kwargs.get("top_k_index", args[1] if len(args) > 1 else None)
        pending[:] = [index] if isinstance(index, torch.Tensor) else []

    def post(_module, _args, _kwargs, output):
        if not pending or not isinstance(output, torch.Tensor) or not output.requires_grad:
            return
        index = pending.pop()

        def on_grad(grad):
            live = grad.reshape(-1, grad.shape[-1]).abs().sum(-1) != 0
            n = module.num_experts
            routed = index.reshape(live.shape[0], -1)[live].reshape(-1).clamp(0, n).cpu()
            found = torch.bincount(routed, minlength=n + 1)[:n]
            counts[id(module)] = counts.get(id(module), torch.zeros(n, dtype=torch.long)) + found

        output.register_hook(on_grad)

    return pre, post


def _expert_lora_layers(model) -> list[tuple[str, object]]:
    """PEFT's adapters on 3D expert weights (ParamWrapper with more than one expert), by module name."""
    return [(n, m) for n, m in model.named_modules() if type(m).__name__ == "ParamWrapper"
            and getattr(m, "num_experts", 1) > 1 and len(m.lora_A)]


def _unlearning(layers, routed: dict[int, torch.Tensor], grads: dict[str, torch.Tensor]) -> list[str]:
    """'module[expert]' for each expert that got tokens but whose adapter got an all-zero gradient."""
    out = []
    for name, layer in layers:
        counts = routed.get(id(layer.get_base_layer()))
        if counts is None:
            continue
        experts = layer.num_experts
        norms = torch.zeros(experts)
        for adapter in layer.lora_A:
            a = grads.get(f"{name}.lora_A.{adapter}.weight")
            b = grads.get(f"{name}.lora_B.{adapter}.weight")
            if a is not None:
                norms += a.reshape(experts, -1, a.shape[-1]).abs().sum(dim=(1, 2)).cpu()
            if b is not None:
                norms += b.reshape(b.shape[0], -1, experts).abs().sum(dim=(0, 1)).cpu()
        out += [f"{name.removeprefix('base_model.model.')}[{e}]" for e in range(experts)
                if counts[e] > 0 and norms[e] == 0]
    return out


def _routing(res, modules, routed: dict[int, torch.Tensor]) -> None:
    reached = [int((routed[id(m)] > 0).sum()) for _, m in modules if id(m) in routed]
    if not reached:
        return
    total = modules[0][1].num_experts
    res.measure("experts_reached_min", min(reached), "experts", f"of {total} per layer, by tokens the loss depends "
                "on, on this batch (counted, not judged: a check-sized batch need not reach every expert)")
    res.measure("experts_reached_mean", round(sum(reached) / len(reached), 1), "experts", f"of {total} per layer")


def _add_expert_adapter(model, session: ModelSession):
    """An adapter on the expert weights (PEFT target_parameters) next to training's, both active; returns the
    undo, or None where PEFT cannot add one."""
    from peft import LoraConfig

    from onboard.patches.peft_targets import expert_parameters

    targets = expert_parameters(model)
    if not targets or not hasattr(model, "add_adapter"):
        return None
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    active = list(model.base_model.active_adapters)
    try:
        model.add_adapter(CHECK_ADAPTER, LoraConfig(r=session.lora_rank, lora_alpha=session.lora_alpha,
                                                    target_modules=[], target_parameters=targets))
        model.base_model.set_adapter(active + [CHECK_ADAPTER])
    except Exception:  # noqa: BLE001 - PEFT refuses: the comparison runs with training's LoRA alone
        return None

    def undo():
        model.base_model.set_adapter(active)
        model.delete_adapter(CHECK_ADAPTER)
        for n, p in model.named_parameters():
            p.requires_grad_(n in trainable)

    return undo
