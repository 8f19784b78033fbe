"""Audit of onboard's hybrid-architecture LoRA and packing findings, in plain torch + transformers + peft (none of
onboard's check code; only its tiny builder, so each model is the one `tiny:ARCH` builds).

1. FM-LORA-COVERAGE: PEFT LoRA (r=16, alpha=32) on q/k/v/o_proj; every lora_B set to randn*0.01; one
   forward+backward (train mode) on 40 random ids with labels=input_ids. Per decoder layer: does it hold a LoRA
   module whose lora_B gets a non-zero gradient? Layers grouped by kind (class names of the layer's direct
   children that hold a >=2-D parameter). nemotron_h, qwen3_5, falcon_h1, jamba, llama (control), plus jamba
   with 8 layers (onboard's 2-layer tiny Jamba has no attention layer).
2. Mamba adapter that never runs: LoRA on in_proj/x_proj/dt_proj, forward hooks on every LoRA-wrapped module,
   one forward (train and eval mode): which wrapped modules are never called; the modeling line that uses
   dt_proj's weight directly.
3. RecurrentGemma packing: a packed row of 3 random samples (40/60/50), position_ids restarting at 0, no mask,
   config.use_cache=False; perturbation leak (a) as is, (b) with every depthwise causal nn.Conv1d replaced by a
   segment-masked causal convolution; (c) per-token loss packed vs alone. Also with 3 layers (onboard's 2-layer
   tiny RecurrentGemma has no attention layer; the 3rd layer of the block pattern is local attention).
4. Fused-loss fallback: a tiny Llama adding a fixed per-token bias to its logits after the output layer (as
   onboard's fixture describes it, re-implemented here): model loss vs CE of the returned logits, vs CE of the
   output layer's own output.

Run: python bench/audit/hybrids_lora.py [--out bench/audit/hybrids_lora.md]
"""

from __future__ import annotations

import argparse
import inspect
import os
import time
import traceback
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)  # a shared box: keep CPU use modest

DATE = "2026-12-06"
MACHINE = "2-core CPU box, fp32"
LENGTHS = (40, 60, 50)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def build(arch: str, model_class=None, layers: int | None = None):
    """tiny:ARCH as onboard builds it (faults._tiny's maker), fp32; `layers` sets num_hidden_layers on the
    config the tiny builder produced (everything else unchanged)."""
    from transformers import AutoModelForCausalLM

    from onboard.fixtures.models import tiny_tokenizer
    from onboard.fixtures.tiny import build_tiny

    tok = tiny_tokenizer()

    def make(config):
        if layers is not None:
            config.num_hidden_layers = layers
        if model_class is not None:
            return model_class._from_config(config, dtype=torch.float32, attn_implementation=None)
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=None)

    torch.manual_seed(0)
    model = build_tiny(arch, len(tok), make)
    return tok, model


def decoder_layers(model) -> nn.ModuleList:
    """The longest ModuleList whose name ends in 'layers' (the decoder stack)."""
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and name.split(".")[-1] == "layers":
            if best is None or len(mod) > len(best):
                best = mod
    return best


def layer_kind(layer) -> str:
    parts = [type(c).__name__ for c in layer.children() if any(p.dim() >= 2 for p in c.parameters())]
    return " + ".join(parts) or type(layer).__name__


# ------------------------------------------------------------------------------------------------------------
# 1. FM-LORA-COVERAGE

ATTN_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def coverage(arch: str, layers: int | None = None) -> dict:
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    t0 = time.time()
    label = arch if layers is None else f"{arch} ({layers} layers)"
    row = {"arch": label}
    try:
        tok, model = build(arch, layers=layers)
    except Exception as exc:  # noqa: BLE001
        row["error"] = f"build: {first_line(exc)}"
        return row
    row["built"] = f"{type(model).__name__}, {len(decoder_layers(model))} layers"
    model.config.use_cache = False
    try:
        peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                      target_modules=ATTN_TARGETS))
    except Exception as exc:  # noqa: BLE001
        row["error"] = f"get_peft_model: {first_line(exc)}"
        row["kinds"] = {}
        for layer in decoder_layers(model):
            k = row["kinds"].setdefault(layer_kind(layer), {"layers": 0, "adapted": 0, "blocks": set()})
            k["layers"] += 1
        row["s"] = time.time() - t0
        return row
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in peft_model.modules():
            if isinstance(mod, LoraLayer):
                for lin in mod.lora_B.values():
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 0.01)
    peft_model.train()
    ids = torch.randint(5, len(tok) - 5, (1, 40), generator=gen)
    out = peft_model(input_ids=ids, labels=ids)
    out.loss.backward()
    kinds: dict[str, dict] = {}
    for layer in decoder_layers(peft_model.get_base_model()):
        entry = kinds.setdefault(layer_kind(layer), {"layers": 0, "adapted": 0, "blocks": set(), "frozen_linears": set()})
        entry["layers"] += 1
        hit = False
        for child in layer.children():
            for name, mod in child.named_modules():
                if isinstance(mod, LoraLayer):
                    if any(lin.weight.grad is not None and lin.weight.grad.abs().max() > 0 for lin in mod.lora_B.values()):
                        hit = True
                        entry["blocks"].add(type(child).__name__)
        if hit:
            entry["adapted"] += 1
        # Linear layers of children that got no grad-receiving adapter (what targets could reach)
        for child in layer.children():
            if type(child).__name__ in entry["blocks"]:
                continue
            for name, mod in child.named_modules():
                if isinstance(mod, nn.Linear) and not isinstance(mod, LoraLayer) and "lora_" not in name \
                        and "base_layer" not in name:
                    entry["frozen_linears"].add(f"{type(child).__name__}.{name}")
    row["kinds"] = kinds
    row["loss"] = out.loss.detach().item()
    row["s"] = time.time() - t0
    return row


# ------------------------------------------------------------------------------------------------------------
# 2. Mamba: an adapter that never runs

def mamba_never_runs() -> dict:
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    t0 = time.time()
    res = {}
    # PEFT's refusal of out_proj / conv1d, for the record
    for extra in (["out_proj"], ["conv1d"]):
        _, model = build("mamba")
        try:
            get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["in_proj", *extra]))
            res[f"refuse_{extra[0]}"] = "accepted"
        except Exception as exc:  # noqa: BLE001
            res[f"refuse_{extra[0]}"] = first_line(exc)
    tok, model = build("mamba")
    model.config.use_cache = False
    pm = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                          target_modules=["in_proj", "x_proj", "dt_proj"]))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in pm.modules():
            if isinstance(mod, LoraLayer):
                for lin in mod.lora_B.values():
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 0.01)
    wrapped = {n: m for n, m in pm.named_modules() if isinstance(m, LoraLayer)}
    calls = {n: 0 for n in wrapped}
    handles = [m.register_forward_hook(lambda mod, a, o, n=n: calls.__setitem__(n, calls[n] + 1))
               for n, m in wrapped.items()]
    ids = torch.randint(5, len(tok) - 5, (1, 40), generator=gen)
    res["modes"] = {}
    for mode in ("train", "eval"):
        for n in calls:
            calls[n] = 0
        pm.train(mode == "train")
        pm.zero_grad(set_to_none=True)
        out = pm(input_ids=ids, labels=ids)
        out.loss.backward()
        never = sorted(n for n, c in calls.items() if c == 0)
        nograd = sorted(n for n, m in wrapped.items()
                        if all(lin.weight.grad is None or lin.weight.grad.abs().max() == 0 for lin in m.lora_B.values()))
        res["modes"][mode] = {"wrapped": len(wrapped), "never": never, "nograd": nograd}
    for h in handles:
        h.remove()
    res["short"] = lambda names: sorted({n.split(".")[-1] for n in names})
    # the modeling source: the lines that use dt_proj's weight directly
    import transformers.models.mamba.modeling_mamba as mm
    src, start = inspect.getsourcelines(mm)
    res["source"] = mm.__file__.split("site-packages/")[-1]
    res["lines"] = [(i + 1, line.rstrip()) for i, line in enumerate(src)
                    if "dt_proj.weight" in line and "init." not in line and "device" not in line]
    res["fused"] = [(i + 1, line.rstrip()) for i, line in enumerate(src) if "fused_output = mamba_inner_fn(" in line
                    or "self.x_proj.weight," in line]
    res["s"] = time.time() - t0
    return res


# ------------------------------------------------------------------------------------------------------------
# 3. RecurrentGemma packing: the short convolution

SEGMENTS: dict = {"seg": None}  # [B, T] sample index of every position; set before each forward


class SegmentMaskedCausalConv1d(nn.Module):
    """A depthwise causal Conv1d (groups == channels, padding == k-1) whose taps never reach into another sample.
    Same output length as the nn.Conv1d it replaces (T + k - 1; the caller keeps the first T)."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias  # the same parameters
        self.k = conv.kernel_size[0]

    def forward(self, x):  # x [B, C, T]
        B, C, T = x.shape
        seg = SEGMENTS["seg"]
        if seg is None:
            seg = torch.zeros(B, T, dtype=torch.long, device=x.device)
        out = torch.zeros_like(x)
        for j in range(self.k):  # shift j: position t reads x[t - j] with tap w[:, 0, k-1-j]
            shifted = F.pad(x, (j, 0))[..., :T]
            same = torch.ones(B, T, dtype=torch.bool, device=x.device)
            if j:
                same[:, :j] = False
                same[:, j:] = seg[:, j:] == seg[:, :-j]
            out = out + self.weight[:, 0, self.k - 1 - j][None, :, None] * shifted * same[:, None, :].to(x.dtype)
        if self.bias is not None:
            out = out + self.bias[None, :, None]
        return F.pad(out, (0, self.k - 1))


def mask_convs(model) -> int:
    n = 0
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Conv1d) and mod.groups == mod.in_channels == mod.out_channels \
                and mod.padding[0] == mod.kernel_size[0] - 1:
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], SegmentMaskedCausalConv1d(mod))
            n += 1
    return n


def packed_inputs(vocab: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    samples = [torch.randint(5, vocab - 5, (n,), generator=gen) for n in LENGTHS]
    return samples


@torch.no_grad()
def run(model, samples):
    ids = torch.cat(samples)[None]
    pos = torch.cat([torch.arange(len(s)) for s in samples])[None]
    SEGMENTS["seg"] = torch.cat([torch.full((len(s),), i) for i, s in enumerate(samples)])[None]
    try:
        return model(input_ids=ids, position_ids=pos).logits[0].float()
    finally:
        SEGMENTS["seg"] = None


def token_losses(logits, ids):
    return F.cross_entropy(logits[:-1], ids[1:], reduction="none")


def packing(layers: int | None) -> dict:
    t0 = time.time()
    tok, model = build("recurrent_gemma", layers=layers)
    model.eval()
    model.config.use_cache = False
    kinds = [layer_kind(l) for l in decoder_layers(model)]
    samples = packed_inputs(len(tok))
    other = torch.randint(5, len(tok) - 5, (LENGTHS[0],), generator=torch.Generator().manual_seed(1))
    later = slice(LENGTHS[0], sum(LENGTHS))
    res = {"layers": len(kinds), "kinds": kinds}

    def measure(tag):
        base = run(model, samples)
        pert = run(model, [other, *samples[1:]])
        leak = (base.log_softmax(-1) - pert.log_softmax(-1))[later].abs().max().item()
        harm, start = [], 0
        for i, s in enumerate(samples):
            alone = run(model, [s])
            d = (token_losses(base[start:start + len(s)], s) - token_losses(alone, s)).abs().max().item()
            harm.append(d)
            start += len(s)
        res[tag] = {"leak": leak, "harm_later": max(harm[1:]), "harm_first": harm[0]}

    measure("as_is")
    # sanity: the masked conv equals nn.Conv1d on a single sample
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv1d))
    x = torch.randn(1, conv.in_channels, 30, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        res["conv_check"] = (SegmentMaskedCausalConv1d(conv)(x) - conv(x))[..., :30].abs().max().item()
    res["replaced"] = mask_convs(model)
    measure("masked")
    res["s"] = time.time() - t0
    return res


# ------------------------------------------------------------------------------------------------------------
# 4. Fused-loss fallback: a logits bias outside the output layer

def final_logits_bias_class():
    from transformers import LlamaForCausalLM

    class LlamaWithFinalLogitsBias(LlamaForCausalLM):
        def __init__(self, config):
            super().__init__(config)
            order = torch.randperm(config.vocab_size, generator=torch.Generator().manual_seed(0))
            self.register_buffer("final_logits_bias", torch.linspace(-2.0, 2.0, config.vocab_size)[order][None],
                                 persistent=False)

        def forward(self, *args, **kwargs):
            labels = kwargs.pop("labels", None)
            out = super().forward(*args, **kwargs)
            out.logits = out.logits + self.final_logits_bias.to(out.logits.dtype)
            if labels is not None:
                out.loss = self.loss_function(out.logits, labels, self.config.vocab_size,
                                              num_items_in_batch=kwargs.get("num_items_in_batch"))
            return out

    return LlamaWithFinalLogitsBias


def shifted_ce(logits, labels):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1))


@torch.no_grad()
def fused_loss() -> dict:
    t0 = time.time()
    tok, model = build("llama", model_class=final_logits_bias_class())
    model.eval()
    captured = {}
    head = model.get_output_embeddings()
    h1 = head.register_forward_pre_hook(lambda m, a: captured.__setitem__("hidden", a[0]))
    h2 = head.register_forward_hook(lambda m, a, o: captured.__setitem__("head_out", o))
    ids = torch.randint(5, len(tok) - 5, (1, 40), generator=torch.Generator().manual_seed(1))
    out = model(input_ids=ids, labels=ids)
    h1.remove(), h2.remove()
    own = out.loss.item()
    ce_logits = shifted_ce(out.logits, ids).item()
    fused = captured["hidden"] @ head.weight.T  # what a fused loss on the output layer computes
    ce_fused = shifted_ce(fused, ids).item()
    ce_fused_bias = shifted_ce(fused + model.final_logits_bias, ids).item()
    return {"own": own, "ce_logits": ce_logits, "ce_fused": ce_fused, "ce_fused_bias": ce_fused_bias,
            "head_vs_manual": (captured["head_out"] - fused).abs().max().item(),
            "bias_range": (model.final_logits_bias.min().item(), model.final_logits_bias.max().item()),
            "s": time.time() - t0}


# ------------------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    args = ap.parse_args()
    import peft
    import transformers

    t_all = time.time()
    lines = [f"# Hybrid architectures: LoRA coverage, an adapter that never runs, packing, fused loss",
             "",
             f"{DATE}, {MACHINE}; transformers {transformers.__version__}, torch {torch.__version__}, "
             f"peft {peft.__version__}. `python bench/audit/hybrids_lora.py`. tiny:ARCH models (onboard's tiny "
             "builder, `torch.manual_seed(0)`); plain torch + transformers + peft, none of onboard's check code.",
             ""]

    # 1
    lines += ["## 1. FM-LORA-COVERAGE: LoRA r=16, alpha=32 on q_proj, k_proj, v_proj, o_proj", "",
              "Every lora_B set to randn*0.01; one forward+backward (train mode) on 40 random ids, labels=input_ids. "
              "A layer is adapted when it holds a LoRA module whose lora_B gets a non-zero gradient. Kind: the classes "
              "of the layer's direct children that hold a >=2-D parameter.", "",
              "| arch | layer kind | layers | adapted | blocks with a grad-receiving adapter | frozen Linear layers (per kind) |",
              "|---|---|---|---|---|---|"]
    cov_rows = []
    for arch, layers in [("nemotron_h", None), ("qwen3_5", None), ("falcon_h1", None), ("jamba", None),
                         ("jamba", 8), ("llama", None)]:
        try:
            row = coverage(arch, layers)
        except Exception as exc:  # noqa: BLE001
            row = {"arch": arch, "error": first_line(exc), "trace": traceback.format_exc(limit=-2)}
        cov_rows.append(row)
        print("coverage", row.get("arch"), row.get("error", ""), round(row.get("s", 0), 1), flush=True)
        kinds = row.get("kinds") or {}
        if not kinds:
            lines.append(f"| {row['arch']} | — | — | — | — | {row.get('error', '')} |")
        for i, (kind, c) in enumerate(kinds.items()):
            err = f" ({row['error']})" if row.get("error") and i == 0 else ""
            adapted = "—" if row.get("error") else c["adapted"]
            frozen = ", ".join(sorted(c.get("frozen_linears", ())))
            lines.append(f"| {row['arch']}{err} | {kind} | {c['layers']} | {adapted} | "
                         f"{', '.join(sorted(c['blocks'])) or '—'} | {frozen or '—'} |")
    lines.append("")

    # 2
    m = mamba_never_runs()
    print("mamba", round(m["s"], 1), flush=True)
    short = m["short"]
    lines += ["## 2. Mamba: LoRA on in_proj, x_proj, dt_proj; forward hooks on every LoRA-wrapped module", "",
              f"PEFT with out_proj in the targets: {m['refuse_out_proj']}; with conv1d: {m['refuse_conv1d']}.", "",
              "| mode | LoRA-wrapped modules | never called | lora_B without gradient (B = randn*0.01) |",
              "|---|---|---|---|"]
    for mode, r in m["modes"].items():
        lines.append(f"| {mode} | {r['wrapped']} | {len(r['never'])}: {', '.join(short(r['never'])) or '—'} "
                     f"({', '.join(r['never'])}) | {len(r['nograd'])}: {', '.join(short(r['nograd'])) or '—'} |")
    lines += ["", f"The block reads dt_proj's weight directly ({m['source']}):", ""]
    lines += [f"    {n}: {t.strip()}" + ("   # reference path (runs here)" if "@" in t else "   # fused-kernel path")
              for n, t in m["lines"]]
    lines += ["", "The fused training path (taken when the mamba_ssm kernel is present, `self.training and cache is None`; "
              "on this CPU box it returns None and the reference path above runs) passes x_proj's weight too:", ""]
    lines += [f"    {n}: {t.strip()}" for n, t in m["fused"]]
    lines.append("")

    # 3
    lines += ["## 3. RecurrentGemma packing: the short convolution", "",
              "Packed row of 3 random samples (40/60/50), position_ids restarting at 0, no attention_mask, "
              "config.use_cache=False, eval. Leak: largest |log_softmax change| over the later samples when the first "
              "sample's tokens change (0 = isolated). Harm: max |per-token loss packed - alone| over the later samples "
              "/ the first. Masked: every depthwise causal nn.Conv1d replaced by a segment-masked causal convolution "
              "(taps into another sample zeroed).", "",
              "| model | layers (kinds) | convs replaced | (a) leak as is | harm as is later / first | (b) leak masked | "
              "(c) harm masked later / first | masked conv = nn.Conv1d on one sample | s |",
              "|---|---|---|---|---|---|---|---|---|"]
    pack = {}
    for layers in (None, 3):
        label = "tiny:recurrent_gemma" if layers is None else "tiny:recurrent_gemma, 3 layers"
        try:
            r = packing(layers)
        except Exception as exc:  # noqa: BLE001
            lines.append(f"| {label} | — | — | {first_line(exc)} | | | | | |")
            continue
        pack[layers] = r
        print("packing", label, round(r["s"], 1), flush=True)
        kinds = ", ".join(k.replace("RecurrentGemma", "") for k in r["kinds"])
        a, b = r["as_is"], r["masked"]
        lines.append(f"| {label} | {r['layers']} ({kinds}) | {r['replaced']} | {fmt(a['leak'])} | "
                     f"{fmt(a['harm_later'])} / {fmt(a['harm_first'])} | {fmt(b['leak'])} | "
                     f"{fmt(b['harm_later'])} / {fmt(b['harm_first'])} | {fmt(r['conv_check'])} | {r['s']:.1f} |")
    lines.append("")

    # 4
    f = fused_loss()
    print("fused", round(f["s"], 1), flush=True)
    lines += ["## 4. Fused-loss fallback: a per-token logits bias after the output layer", "",
              f"Tiny Llama whose forward adds a fixed bias (randperm of linspace(-2, 2, V), range "
              f"{f['bias_range'][0]:.1f}..{f['bias_range'][1]:.1f}) to its logits and computes its loss on them; 40 random "
              "ids, labels=input_ids. The output layer's input captured with a forward pre-hook.", "",
              "| quantity | value | vs the model's own loss |", "|---|---|---|",
              f"| model's own loss | {f['own']:.7f} | — |",
              f"| (a) next-token CE of the returned logits | {f['ce_logits']:.7f} | {fmt(abs(f['ce_logits'] - f['own']))} |",
              f"| (b) next-token CE of hidden @ lm_head.weight.T (what a fused loss computes) | {f['ce_fused']:.7f} | "
              f"{fmt(abs(f['ce_fused'] - f['own']))} |",
              f"| (b') the same plus the bias | {f['ce_fused_bias']:.7f} | {fmt(abs(f['ce_fused_bias'] - f['own']))} |",
              f"| output layer's own output vs hidden @ weight.T | — | {fmt(f['head_vs_manual'])} |", ""]

    # conclusions
    lines += ["## Conclusions", ""]
    nem = next(r for r in cov_rows if r["arch"] == "nemotron_h")
    frozen_nem = [k for k, c in nem.get("kinds", {}).items() if c["adapted"] == 0]
    adapted_nem = [k for k, c in nem.get("kinds", {}).items() if c["adapted"] > 0]
    lines.append(f"- Attention-only targets: Nemotron-H adapts only {', '.join(adapted_nem) or 'no'} layers; "
                 f"{', '.join(frozen_nem)} layers stay frozen. Qwen3.5's GatedDeltaNet layers and every layer of the "
                 "8-layer Jamba but its attention layer stay frozen; onboard's 2-layer tiny Jamba has no attention layer "
                 "at all (PEFT: no target found). Llama: every layer adapted.")
    lines.append("- Falcon-H1 counts as fully covered by layer kind (each layer holds attention, Mamba mixer and MLP in "
                 "parallel), yet its Mamba mixers and MLPs carry no adapter: a per-layer-kind count cannot see that.")
    tr = m["modes"]["train"]
    lines.append(f"- Mamba: the never-called LoRA modules are {', '.join(short(tr['never']))} (train and eval); "
                 "dt_proj's weight is read directly. With the mamba_ssm kernel present, the fused training path also reads "
                 "x_proj's weight directly (code reading; not run here).")
    if None in pack and 3 in pack:
        p2, p3 = pack[None], pack[3]
        lines.append(f"- RecurrentGemma: masking the short convolution takes the leak from {fmt(p2['as_is']['leak'])} "
                     f"to {fmt(p2['masked']['leak'])} (2 layers) and {fmt(p3['as_is']['leak'])} to "
                     f"{fmt(p3['masked']['leak'])} (3 layers, with the local-attention layer onboard's tiny model lacks); "
                     f"packed vs alone then agree to {fmt(max(p2['masked']['harm_later'], p3['masked']['harm_later']))}.")
    lines.append(f"- Fused loss: the model's own loss equals CE of its logits ({fmt(abs(f['ce_logits'] - f['own']))}); "
                 f"CE of the output layer's output differs by {abs(f['ce_fused'] - f['own']):.3f} nats: a fused loss "
                 "cannot reproduce it; the model's own loss is right.")
    lines.append("- onboard's tiny builder keeps one layer of every type only from a `layer_types` list: Jamba (attn_layer_period/"
                 "offset) and RecurrentGemma (a 3-entry block_types) lose their attention layers in tiny:jamba and "
                 "tiny:recurrent_gemma (first 2 layers kept); the 8- and 3-layer rows above add them back.")
    lines += ["", f"Total runtime {time.time() - t_all:.0f} s.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
