"""LORA001: PEFT LoRA wraps the model's linear layers and every adapter that should learn gets a gradient."""

from __future__ import annotations

from typing import TYPE_CHECKING

import warnings
from collections import Counter

import torch

from onboard.checks.base import Check, FixAvailability
from onboard.harness.result import Status
from onboard.patches import ids

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession

_GROUPS = (
    ("experts", ("expert",)),
    ("vision", ("vision", "visual", "image", "audio", "multi_modal_projector", "mm_projector")),
    ("attention", ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "qkv", "query", "key", "value")),
    ("mlp", ("mlp", "ffn", "feed_forward", "gate_proj", "up_proj", "down_proj", "fc1", "fc2", "dense_h")),
)


def module_group(name: str) -> str:
    lowered = name.lower()
    for group, keys in _GROUPS:
        if any(k in lowered for k in keys):
            return group
    return "other"


class LoraCheck(Check):
    """What it does:
    Applies PEFT LoRA (the setup's rank and alpha, 16 and 32 by default, to all linear layers or to
    --lora-targets) and reports coverage by group (attention, mlp, experts, vision, other): which modules were wrapped, which were left out and why,
    the trainable parameter count and any warning PEFT raised. Then runs one forward and backward pass on
    a sample and checks that every adapter on the text path received a non-zero gradient (LoRA's B
    matrices: A gets none at initialisation, since B starts at zero).

    Why it matters:
    PEFT skips what it cannot wrap: custom Linear wrappers, fused expert weights. The adapter then trains
    a fraction of what was meant, with no error. An adapter without gradient never learns.

    Failure modes:
    FM-LORA-WRAPPED (custom Linear wrappers rejected or skipped), FM-LORA-UNSUPPORTED (a module the targets
    select that PEFT cannot adapt: it refuses it, as Mamba's out_proj, or its LoRA layer crashes on it, as on
    Llama 4's router, an nn.Linear whose forward returns a tuple), FM-LORA-EXPERTS (fused MoE expert
    parameters not targeted), FM-LORA-NOGRAD (adapters whose output the loss depends on get no gradient;
    a module whose output never reaches the loss, e.g. a pooler, or whose gradient a zero-initialised
    random weight blocks, is evidence, not a finding), FM-LORA-COVERAGE (WARN: a kind of token mixer or of
    experts in the decoder layers, e.g. the Mamba or GatedDeltaNet mixers of a hybrid, has no instance with an
    adapter on the loss path while another kind has (every kind frozen alike, as MLP-only targets leave
    attention, is a choice, not a finding): target lists written for attention leave them frozen; the message names the
    Linear layers targets could reach). The decoder layers are the longest list of like modules a text forward
    runs; token mixers are found by running the model (a part whose output at a
    later position moves when its input at the first one changes), experts by their structure; dense MLPs are
    not counted (attention-only LoRA is a common choice). Adapters whose module never runs in a training
    forward (Mamba's dt_proj, whose weight the block uses directly) are named.

    Fix:
    lora.wrapped_linear_targets (safe): target names that hit a custom Linear wrapper are pointed at the
    wrapped nn.Linear; verified by applying LoRA again. lora.exclude_unwrappable (safe): the modules PEFT
    cannot adapt are left out of LoRA (exclude_modules); verified likewise. lora.expert_parameters (unsafe, --unsafe-fixes):
    fused expert weights are added through PEFT's target_parameters; it changes what is trained (a much
    larger adapter), so without the flag the finding stays a WARN.

    Fix safety:
    The wrapper redirect trains exactly the layers the target names meant. The expert patch adds
    parameters to the adapter.
    """

    code = "LORA001"
    runs_on = "whole"  # what LoRA wraps and trains is the whole model's count (a user reads its trainable parameters)
    name = "lora"
    summary = "PEFT LoRA applies; coverage by group; adapters get gradients"
    requires = ("LOAD001", "ATTN001")  # a forward that cannot run says nothing more here
    fix_availability = FixAvailability.SOMETIMES

    def run(self, session: ModelSession):
        from peft import get_peft_model
        from peft.tuners.lora import LoraLayer

        from onboard.patches.peft_targets import expert_parameters, strip_lora, wrapper_redirects

        session.set_adapter(None)  # a re-check after a LoRA-config transform: start from the bare model
        model = session.model
        head = model.get_output_embeddings()
        config = session.lora_config()  # the setup's rank, alpha and targets, rewritten by the transforms applied
        res = self.result(Status.PASS, "")
        res.measure("target_modules", _describe_targets(config.target_modules))
        if config.target_parameters:
            res.measure("target_parameters", ", ".join(config.target_parameters))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                peft_model = get_peft_model(model, config)
            except (ValueError, TypeError) as exc:
                strip_lora(model)
                text = str(exc).splitlines()[0]
                redirects = wrapper_redirects(model, config)
                res.status, res.message = Status.FAIL, f"PEFT refused the model: {text}"
                if redirects:
                    res.diagnosis, res.proposed_patch = "FM-LORA-WRAPPED", ids.LORA_WRAPPED_LINEAR
                    res.evidence["custom_linear_wrappers"] = [f"{k} -> {v}" for k, v in list(redirects.items())[:20]]
                else:
                    _unsupported(res, model)
                return res
        peft_warnings = sorted({str(w.message).splitlines()[0] for w in caught if "peft" in (w.filename or "")})

        base = peft_model.get_base_model()
        wrapped = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
        wrapped = {n: m for n, m in wrapped.items() if not _under(n, wrapped)}  # ParamWrappers nest
        covered = set()
        for name, module in wrapped.items():
            covered.update(f"{name}.{child}" if child else name for child, _ in module.named_modules())
            covered.add(name.rpartition(".")[0])  # a wrapper whose inner Linear is wrapped is covered
        skipped = {}
        for name, module in base.named_modules():
            if name and name not in covered:
                reason = _skip_reason(module, head)
                if reason:
                    skipped[name] = reason
        for name, param in base.named_parameters():
            if param.dim() == 3 and "expert" in name.lower() and not _under(name, wrapped):
                skipped[name] = "fused expert parameters: target_modules cannot reach them (FM-LORA-EXPERTS)"

        groups = Counter(module_group(n) for n in wrapped)
        for group in ("attention", "mlp", "experts", "vision", "other"):
            res.measure(f"wrapped_{group}", groups.get(group, 0), "modules")
        res.measure("skipped", len(skipped), "modules")
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in peft_model.parameters())
        res.measure("trainable_params", trainable, "params")
        res.measure("trainable_fraction", round(trainable / total, 6), "", compare=">", limit=0)
        res.evidence["skipped"] = _summarise(skipped)
        if peft_warnings:
            res.evidence["peft_warnings"] = peft_warnings

        if not wrapped:
            res.status, res.message = Status.FAIL, f"LoRA wrapped no module with targets {config.target_modules!r}"
            strip_lora(model)
            return res
        session.set_adapter(peft_model)
        if not any(ex.n_trained for ex in session.examples):  # no loss: gradients cannot say anything
            res.status = Status.SKIP
            res.message = (f"{len(wrapped)} modules wrapped; adapter gradients not measured: no sample has a "
                           "labelled token (LOSS001 names it)")
            return res

        try:
            paths = _gradient_paths(peft_model, wrapped, session)
        except Exception as exc:  # noqa: BLE001 - a LoRA layer that cannot run its module is the finding
            if not _raised_in_peft(exc):
                raise
            res.status = Status.FAIL
            res.message = f"PEFT's LoRA layer cannot run a wrapped module: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            _unsupported(res, model)
            return res
        missing = paths["disconnected"] + paths["blocked"] + paths["detached"]
        res.measure("adapters_without_gradient", len(missing), "adapters", "0 among modules whose output reaches the loss")
        res.measure("adapters_not_run", len(paths["not_run"]), "adapters", "modules text-only training never calls")
        res.measure("adapters_off_loss_path", len(paths["off_path"]), "adapters", "ran, but the loss does not depend on them")
        if paths["not_run"]:
            res.evidence["not_run_on_text"] = _summarise({n: f"{module_group(n)} module not called" for n in paths["not_run"]})
        if paths["off_path"]:
            res.evidence["off_loss_path"] = _summarise(
                {n: "its output does not reach the loss (changing it changes no loss)" for n in paths["off_path"]})
        if paths["init_blocked"]:
            res.evidence["blocked_by_random_init"] = _summarise(
                {n: "all-zero gradient at its output or all-zero input: a zero-initialised weight (random weights)"
                 for n in paths["init_blocked"]})
        summary = (f"{len(wrapped)} modules wrapped ({', '.join(f'{g} {c}' for g, c in sorted(groups.items()))}), "
                   f"{trainable / 1e6:.2f}M trainable params")
        if not paths["ok"] and not missing:
            res.status, res.diagnosis = Status.FAIL, "FM-LORA-NOGRAD"
            res.message = (f"no adapter gets a gradient: the loss depends on none of the {len(wrapped)} wrapped modules "
                           "(targets that miss the text path), so training would change nothing")
            return res
        if missing:
            res.status, res.diagnosis = Status.FAIL, "FM-LORA-NOGRAD"
            why = {"disconnected": "its module's output gets a gradient, the adapter none",
                   "blocked": "an all-zero gradient at its output, or an all-zero input",
                   "detached": "its output changes the loss but passes it no gradient (detached)"}
            kind = next(k for k in why if paths[k])
            res.message = f"{len(missing)} adapters on the loss path get no gradient, e.g. {paths[kind][0]}: {why[kind]}"
            res.evidence["no_gradient"] = [f"{n}: {why[k]}" for k in why for n in paths[k]][:20]
            return res
        probe = session.probe_batch()  # the batch the gradient paths were measured on
        layers = decoder_layers(peft_model, probe)
        coverage = layer_coverage(peft_model, set(paths["ok"]), probe, layers)
        res.evidence["layer_coverage"] = {kind: f"{c['adapted']} of {c['layers']} layers adapted on the loss path"
                                          for kind, c in coverage.items()}
        inside = tuple(f"{n}." for n, m in base.named_modules() if any(m is layer for layer in layers))
        never = [n for n in paths["not_run"] if module_group(n) != "vision" and n.startswith(inside)]
        if never:
            summary += (f"; {len(never)} adapters never run (their module is not called in a training forward, e.g. "
                        f"{never[0]}: its weight is used directly)")
        experts = [n for n, r in skipped.items() if "FM-LORA-EXPERTS" in r]
        res.message = summary
        frozen = {kind: c for kind, c in coverage.items() if c["adapted"] == 0}
        # a kind frozen beside kinds that learn (attention-only targets on a hybrid); every kind frozen alike is
        # a choice of targets (MLP-only LoRA), and frozen experts alone are FM-LORA-EXPERTS below, with its fix
        if frozen and len(frozen) < len(coverage) and not (experts and all(c["experts"] for c in frozen.values())):
            res.measure("mixer_kinds_without_adapter", len(frozen), "kinds",
                        f"of {len(coverage)} kinds of token mixer or experts in the decoder layers", compare="==", limit=0)
            res.status, res.diagnosis = Status.WARN, "FM-LORA-COVERAGE"
            res.message = ("no adapter on the loss path in any "
                           + "; ".join(f"{kind} ({c['layers']} of {c['layers']} layer{'s' if c['layers'] > 1 else ''}; "
                                       f"targets that reach it: {_reachable(c)})"
                                       for kind, c in frozen.items())
                           + f": they stay frozen. {summary}")
            if experts:
                res.message += f"; {len(experts)} fused expert tensors not covered (--unsafe-fixes adds them)"
            return res
        if experts:
            res.status, res.diagnosis = Status.WARN, "FM-LORA-EXPERTS"
            res.proposed_patch = ids.LORA_EXPERT_PARAMETERS
            res.message += (f"; {len(experts)} fused expert tensors not covered "
                            f"({', '.join(expert_parameters(base))}; --unsafe-fixes adds them)")
        return res


def layer_coverage(model, adapted: set[str], batch, layers: list[torch.nn.Module]) -> dict[str, dict]:
    """The parts of the decoder layers that training must reach, by kind (class): each token mixer (a part whose
    output at one position moves when its input at another position changes: attention, a Mamba, GatedDeltaNet or
    convolution mixer, found by running the model, not by name) and each mixture of experts (a part holding a
    list of like modules, or fused 3-D weights). Dense MLPs are left out: adapting attention alone is a common
    choice on a dense model. Each kind with how many layers have it, how many of those hold an adapter whose
    gradient the loss reaches (`adapted`: LORA001's measured set), and the Linear names inside it that targets
    could name. Layers are found in the module tree (the longest list of one class), not by attribute name."""
    from onboard.patches.base import unwrap

    base = unwrap(model)
    names = {id(m): n for n, m in base.named_modules()}
    parts: dict[str, list[tuple[str, torch.nn.Module]]] = {}
    for layer in layers:
        for child, module in layer.named_children():
            if any(p.dim() >= 2 for p in module.parameters()):
                parts.setdefault(type(module).__name__, []).append((f"{names[id(layer)]}.{child}", module))
    kinds: dict[str, dict] = {}
    for kind, instances in parts.items():
        first = instances[0][1]
        experts = _holds_experts(first)
        if not (experts or _mixes_tokens(model, first, batch)):
            continue
        linears = []
        for _, module in instances:
            for name, sub in module.named_modules():
                leaf = name.rpartition(".")[2]
                if isinstance(sub, torch.nn.Linear) and leaf not in linears and "lora_" not in name and leaf != "base_layer":
                    linears.append(leaf)
        kinds[kind] = {"layers": len(instances), "linears": linears, "experts": experts,
                       "adapted": sum(any(n == prefix or n.startswith(prefix + ".") for n in adapted)
                                      for prefix, _ in instances)}
    return kinds


@torch.no_grad()
def decoder_layers(model, batch) -> list[torch.nn.Module]:
    """The layers a text forward runs through: the longest list of modules of one class whose first member runs
    in a forward of `batch` (a vision tower's longer list of blocks never runs on text)."""
    from onboard.patches.base import unwrap

    lists = [list(m) for m in unwrap(model).modules()
             if isinstance(m, torch.nn.ModuleList) and len(m) > 1 and len({type(x) for x in m}) == 1]
    ran: set[int] = set()
    hooks = [blocks[0].register_forward_hook(lambda module, *_: ran.add(id(module))) for blocks in lists]
    try:
        model(**batch, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    running = [blocks for blocks in lists if id(blocks[0]) in ran]
    return max(running, key=len, default=[])


def _reachable(kind: dict) -> str:
    """What LoRA targets could name to reach a kind of part."""
    if kind["linears"]:
        return ", ".join(kind["linears"])
    if kind["experts"]:
        return "its fused expert weights, through target_parameters"
    return "none: it holds no Linear layer (a convolution's own weights)"


def _holds_experts(module: torch.nn.Module) -> bool:
    """A mixture of experts: fused 3-D expert weights (not a convolution's kernel), or a list of at least two like
    modules."""
    convs = {id(p) for m in module.modules() if isinstance(m, torch.nn.modules.conv._ConvNd) for p in m.parameters()}
    if any(p.dim() >= 3 and id(p) not in convs for p in module.parameters()):
        return True
    return any(isinstance(m, torch.nn.ModuleList) and len(m) > 1 and len({type(x) for x in m}) == 1
               for m in module.modules())


@torch.no_grad()
def _mixes_tokens(model, part: torch.nn.Module, batch) -> bool:
    """Whether `part` mixes positions: its input changed at the first position only, does its output move at a
    later one? Two forwards of the model with hooks on the part; a position-wise MLP moves by exactly 0."""
    outputs: list[torch.Tensor] = []

    def keep(_module, _args, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(out, torch.Tensor):
            outputs.append(out.detach().clone())

    def nudge(_module, args, kwargs):
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 3:
            x = args[0].clone()
            x[:, 0] += 1.0
            return (x, *args[1:]), kwargs
        if isinstance(kwargs.get("hidden_states"), torch.Tensor) and kwargs["hidden_states"].dim() == 3:
            x = kwargs["hidden_states"].clone()
            x[:, 0] += 1.0
            return args, {**kwargs, "hidden_states": x}
        return None

    kept = part.register_forward_hook(keep)
    try:
        model(**batch, use_cache=False)
        nudged = part.register_forward_pre_hook(nudge, with_kwargs=True)
        try:
            model(**batch, use_cache=False)
        finally:
            nudged.remove()
    finally:
        kept.remove()
    if len(outputs) != 2 or outputs[0].shape != outputs[1].shape or outputs[0].dim() < 3 or outputs[0].shape[1] < 2:
        return False
    return not torch.equal(outputs[0][:, 1:], outputs[1][:, 1:])


def _unsupported(res, model) -> None:
    """Name the modules PEFT cannot adapt (FM-LORA-UNSUPPORTED) and propose leaving them out."""
    from onboard.patches.peft_targets import unwrappable_modules

    found = unwrappable_modules(model)
    if found:
        res.diagnosis, res.proposed_patch = "FM-LORA-UNSUPPORTED", ids.LORA_EXCLUDE_UNWRAPPABLE
        res.evidence["unsupported_modules"] = _summarise(found)


def _raised_in_peft(exc: BaseException) -> bool:
    import traceback

    return any("/peft/tuners/" in frame.filename for frame in traceback.extract_tb(exc.__traceback__))


def _describe_targets(targets) -> str:
    if isinstance(targets, str):
        return targets
    names = sorted(targets)
    return ", ".join(names) if len(names) <= 8 else f"{len(names)} names, e.g. {', '.join(names[:4])}"


def _under(name: str, modules: dict) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in modules for i in range(1, len(parts)))


def _skip_reason(module, head) -> str | None:
    if module is head:
        return "output layer: all-linear leaves it out (it is tied to or as large as the embedding)"
    if isinstance(module, torch.nn.Linear):
        return "not matched by target_modules"
    from onboard.patches.peft_targets import inner_linear

    if inner_linear(module):
        return f"custom Linear wrapper {type(module).__name__}: not matched by target_modules"
    return None


def _summarise(skipped: dict[str, str]) -> list[str]:
    """One line per reason, with a count and an example, instead of one line per module."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        by_reason.setdefault(reason, []).append(name)
    return [f"{len(names)} x {reason} (e.g. {names[0]})" for reason, names in by_reason.items()]


def _gradient_paths(peft_model, wrapped, session: ModelSession) -> dict[str, list[str]]:
    """Every adapter, by how the loss reaches it, from one forward and backward on a sample:
    ok (its B matrix got a gradient), not_run (its module is never called on text: a vision tower, Bart's
    cross-attention), off_path (the module ran but the loss does not depend on its output: changing the
    output changes no loss, e.g. BigBird's pooler), init_blocked / blocked (a gradient reached its output
    but was all zero, or its input was all zero: on random weights a zero-initialised weight does that,
    e.g. xLSTM's up projections, and says nothing of the architecture), detached (the output changes the loss yet passes no gradient back) and
    disconnected (the output got a gradient, the adapter none)."""
    batch = session.probe_batch()  # the shortest sample with a loss to backpropagate
    peft_model.zero_grad(set_to_none=True)
    ran, grad_at_output, zero_input = set(), {}, {}

    def on_output(name):
        def hook(_module, args, output):
            ran.add(name)
            if args and isinstance(args[0], torch.Tensor):
                zero_input[name] = zero_input.get(name, True) and not bool(torch.any(args[0] != 0))
            out = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(out, torch.Tensor) and out.requires_grad:
                out.register_hook(lambda g: grad_at_output.__setitem__(
                    name, grad_at_output.get(name, False) or bool(torch.any(g != 0))))
        return hook

    hooks = [m.register_forward_hook(on_output(n)) for n, m in wrapped.items()]
    try:
        out = peft_model(**batch, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    if out.loss.requires_grad:  # no adapter on the path of the loss: nothing to differentiate
        out.loss.backward()
    loss = out.loss.detach()
    paths: dict[str, list[str]] = {k: [] for k in ("ok", "not_run", "off_path", "init_blocked", "blocked", "detached",
                                                   "disconnected")}
    for name, module in wrapped.items():
        grads = [p.grad for n, p in module.named_parameters() if "lora_B" in n and p.requires_grad]
        if name not in ran:
            paths["not_run"].append(name)
        elif grads and any(g is not None and torch.any(g != 0) for g in grads):
            paths["ok"].append(name)
        elif grad_at_output.get(name) and not zero_input.get(name):
            paths["disconnected"].append(name)
        elif name in grad_at_output:  # an all-zero gradient at its output, or an all-zero input
            paths["init_blocked" if session.spec.random_weights else "blocked"].append(name)
        elif _loss_depends_on(peft_model, module, batch, loss):
            paths["detached"].append(name)
        else:
            paths["off_path"].append(name)
    peft_model.zero_grad(set_to_none=True)
    return paths


@torch.no_grad()
def _loss_depends_on(model, module, batch, loss: torch.Tensor) -> bool:
    """Whether the loss moves when `module`'s output is scaled: an exact null for an unused output."""
    def scaled(_module, _args, output):
        if isinstance(output, (tuple, list)):
            return type(output)((output[0] * 1.5, *output[1:]))
        return output * 1.5

    hook = module.register_forward_hook(scaled)
    try:
        moved = model(**batch, use_cache=False).loss
    finally:
        hook.remove()
    return not torch.equal(moved, loss)
