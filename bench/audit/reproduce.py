"""Audit of a support matrix: every finding of every non-READY row reproduced with plain torch / transformers /
peft, none of onboard's check code (only its tiny builder, so the model is the one the sweep checked).

For each blocking finding of a sweep record, the matching plain measurement runs in its own process and
the finding is classified:
- TRUE: the plain script sees the same thing (the cause, with the line of transformers source, comes from
  bench/audit/causes.py; a TRUE finding without a named cause is listed as such);
- ARTIFACT: the plain script does not see it: onboard's false alarm, to be fixed at its mechanism;
- LIMIT: the row is onboard's limit (cannot build small, missing library, crashed check, time limit), not a
  claim about the architecture; the audit records that the build or run fails outside onboard's checks too.

Run: python bench/audit/reproduce.py SWEEP.jsonl [--out bench/audit/results] [--arch a,b] [--timeout 120] [--workers 2]
Writes OUT.jsonl (one line per finding) and OUT.md (the table), and prints the counts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = Path(__file__).resolve().parent
LIMIT_OUTCOMES = ("INCONCLUSIVE", "BUILD_ERROR", "NEEDS_DEPENDENCY", "TIMEOUT", "CRASH")
FP32_ZERO = 1e-5  # an isolated sample moves by exactly 0; anything above this in fp32 is a real move


# ---- the model, exactly as the sweep built it ------------------------------------------------------------

def build(arch: str):
    """tiny:ARCH through onboard's tiny builder (the same config and weights seed as the sweep), fp32, eval."""
    import torch
    from onboard.harness.loading import tiny_auto

    from onboard.fixtures.models import tiny_tokenizer
    from onboard.fixtures.tiny import build_tiny, config_for

    tok = tiny_tokenizer()
    auto = tiny_auto(arch)
    torch.manual_seed(0)

    def make(config):
        cls = auto._model_mapping[type(config)]
        return cls._from_config(config_for(cls, config), dtype=torch.float32)

    model = build_tiny(arch, len(tok), make).eval()
    if callable(getattr(model, "set_default_language", None)):  # the setup call the report names (X-MOD)
        model.set_default_language(list(model.config.languages)[0])
    return tok, model


def sequences(tok, n: int = 3):
    import torch

    gen = torch.Generator().manual_seed(1)
    vocab = len(tok)
    return [torch.randint(5, vocab - 5, (length,), generator=gen) for length in (21, 17, 24)[:n]]


# ---- plain reproductions, one per kind of finding --------------------------------------------------------

def packing(model, tok) -> dict:
    """Three samples in one row, position_ids restarting, no mask, use_cache=False; the first sample's tokens
    changed; how far the later samples' log-probs move. Then the same with an explicit block-diagonal 4D mask."""
    import torch

    seqs = sequences(tok)
    ids = torch.cat(seqs)[None]
    pos = torch.cat([torch.arange(len(s)) for s in seqs])[None]
    other = ids.clone()
    other[0, : len(seqs[0])] = (other[0, : len(seqs[0])] + 7) % (len(tok) - 10) + 5
    later = slice(len(seqs[0]), None)

    def moved(**kw):
        with torch.no_grad():
            a = model(input_ids=ids, position_ids=pos, **kw).logits.float().log_softmax(-1)
            b = model(input_ids=other, position_ids=pos, **kw).logits.float().log_softmax(-1)
        return (a[0, later] - b[0, later]).abs().max().item()

    out = {}
    for name, kw in (("leak_default_cache", {}), ("leak_ones_mask", {"attention_mask": torch.ones_like(ids), "use_cache": False}),
                     ("leak", {"use_cache": False})):
        try:
            out[name] = moved(**kw)
        except Exception as exc:  # noqa: BLE001 - a convention the model cannot run
            out[name + "_error"] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"
    mask = _block_mask([len(s) for s in seqs])
    try:
        out["leak_with_block_mask"] = moved(attention_mask=mask, use_cache=False)
    except Exception as exc:  # noqa: BLE001
        out["block_mask_error"] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
    return out


# which plain measurement shows each packing failure mode
PACK_KEYS = {"FM-PACK-CACHE": "leak_default_cache", "FM-PACK-MASK": "leak_ones_mask", "FM-PACK-ISOLATION": "leak"}


def fused_loss(model, tok) -> dict:
    """The model's loss on a labelled sequence against the cross-entropy of its own logits, shifted and not;
    and whether the logits are a scale (or softcap) of what the output layer returns."""
    import torch
    import torch.nn.functional as F

    ids = sequences(tok, 1)[0][None]
    head = model.get_output_embeddings()
    seen = []
    hook = head.register_forward_hook(lambda _m, _a, out: seen.append(out.detach()))
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids, use_cache=False)
    hook.remove()
    logits = out.logits.float()
    shifted = F.cross_entropy(logits[0, :-1], ids[0, 1:]).item()
    unshifted = F.cross_entropy(logits[0], ids[0]).item()
    res = {"model_loss": out.loss.item(), "ce_shifted": shifted, "ce_unshifted": unshifted, "head_calls": len(seen)}
    if len(seen) == 1:
        z = seen[0].float()[..., : logits.shape[-1]]
        scale = float((logits * z).sum() / (z * z).sum())
        res["logits_scale_fit_error"] = float((scale * z - logits).abs().max() / logits.abs().max())
        res["logits_scale"] = scale
    rel = abs(res["model_loss"] - shifted) / abs(shifted)
    # entries the model sets to the dtype's lowest value after the output layer (Chameleon masks its image
    # tokens): no scale or softcap of the layer's output gives them, so a fused loss on it cannot either
    res["masked_logits"] = int((logits <= torch.finfo(logits.dtype).min / 2).sum())
    # a fused next-token loss on the output layer can equal the model's loss only if the model's loss is the
    # shifted CE of its logits and the logits are a scale (or softcap) of the layer's output
    res["true"] = (rel > 1e-4 or res["masked_logits"] > 0
                   or res.get("logits_scale_fit_error", 1.0) > 1e-4 and not _softcap(model))
    return res


def _softcap(model) -> bool:
    cfg = model.config.get_text_config()
    return bool(getattr(cfg, "final_logit_softcapping", None))


def _plain_fixes(model, fixes: list[str]) -> None:
    """The verified fixes a row trained with, written plainly: `is_decoder` (and the modules' causal flag) for
    attention.causal (XLNet's: attn_type "uni" on its config and the modules that copied it); the block-diagonal
    mask is given per call (train_loss); the cache off for packing.no_cache_no_mask; labels.shift is each
    sample's labels written one position left (train_loss). TRAIN001 runs after them, so its finding is judged
    with them."""
    if "attention.causal" in fixes:
        for config in (model.config, model.config.get_text_config()):
            if hasattr(config, "is_decoder"):
                config.is_decoder = True
            if getattr(config, "attn_type", None) == "bi":
                config.attn_type = "uni"
        for module in model.modules():
            if getattr(module, "attn_type", None) == "bi":
                module.attn_type = "uni"
        for name, module in model.named_modules():
            if getattr(module, "is_causal", None) is False and "cross" not in name.lower():
                module.is_causal = True
    if "packing.no_cache_no_mask" in fixes:
        model.config.use_cache = False
        model.config.get_text_config().use_cache = False


def _block_mask(lengths: list[int]):
    import torch

    n = sum(lengths)
    doc = torch.cat([torch.full((k,), i) for i, k in enumerate(lengths)])
    allowed = (doc[:, None] == doc[None, :]) & torch.ones(n, n, dtype=torch.bool).tril()
    return torch.zeros(n, n).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]


def train_loss(model, tok, fixes: list[str] = ()) -> dict:
    """A row packed by DataCollatorWithFlattening, its loss computed by the HF Trainer itself (compute_loss, in
    train mode: the Trainer also turns the config's use_cache off), against the token-mean shifted CE of the
    samples run alone. A model that is stochastic in train mode (dropout) is compared in eval mode. A forward
    that asks for an input text does not have is FM-INPUT-EXTRA's finding."""
    import tempfile

    import torch
    import torch.nn.functional as F
    from transformers import DataCollatorWithFlattening, Trainer, TrainingArguments

    seqs = sequences(tok)
    if "labels.shift" in fixes:  # the model's loss does not shift: each sample's targets, written shifted
        feats = [{"input_ids": s.tolist(), "labels": s.tolist()[1:] + [-100]} for s in seqs]
    else:
        feats = [{"input_ids": s.tolist(), "labels": s.tolist()} for s in seqs]
    collator = DataCollatorWithFlattening(return_position_ids=True)
    _plain_fixes(model, fixes)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, per_device_train_batch_size=len(seqs), use_cpu=True, report_to="none",
                                 remove_unused_columns=False)
        trainer = Trainer(model=model, args=args, data_collator=collator, train_dataset=feats)
        inputs = trainer._prepare_inputs(collator(feats))
        if "packing.block_mask" in fixes:
            inputs["attention_mask"] = _block_mask([len(s) for s in seqs])
        model.train()
        try:
            torch.manual_seed(0)
            first = trainer.compute_loss(model, inputs)
            first.backward()
            with torch.no_grad():
                torch.manual_seed(1)
                second = trainer.compute_loss(model, inputs).item()
        except Exception as exc:  # noqa: BLE001
            text = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
            return {"train_forward_error": text, "input_extra": "token_type_ids" in text}
        finally:
            model.zero_grad(set_to_none=True)
        stochastic = first.item() != second
        if stochastic:
            model.eval()
        with torch.no_grad():
            packed = trainer.compute_loss(model, inputs).item() if stochastic else first.item()
            alone = []
            for s in seqs:
                logits = model(input_ids=s[None], use_cache=False).logits.float()
                alone.append(F.cross_entropy(logits[0, :-1], s[1:], reduction="none"))
        model.eval()
    ref = torch.cat(alone).mean().item()
    rel = abs(packed - ref) / ref
    return {"fixes": list(fixes), "stochastic_in_train_mode": stochastic, "packed_loss": packed, "alone_loss": ref,
            "rel": rel, "loss_differs": rel > 1e-4}


TRAIN_KEYS = {"FM-TRAIN-LOSS": "loss_differs", "FM-INPUT-EXTRA": "input_extra"}


def grad_accum(model, tok) -> dict:
    """What the HF Trainer does with gradient accumulation: when the forward takes **kwargs (or the class sets
    accepts_loss_kwargs) it passes num_items_in_batch and does not divide by the accumulation steps; a model that
    then ignores num_items_in_batch (its own mean loss) trains on k times the loss."""
    import inspect

    import torch

    ids = sequences(tok, 1)[0][None]
    accepts = getattr(model, "accepts_loss_kwargs", None)
    if accepts is None:
        accepts = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(model.forward).parameters.values())
    trained = ids.shape[1] - 1
    with torch.no_grad():
        mean = model(input_ids=ids, labels=ids, use_cache=False).loss.item()
        given = model(input_ids=ids, labels=ids, use_cache=False, num_items_in_batch=torch.tensor(2 * trained)).loss.item()
        twice = model(input_ids=ids, labels=ids, use_cache=False, num_items_in_batch=torch.tensor(4 * trained)).loss.item()
    # a loss that takes the count is its token sum over it: twice the count, half the loss (whatever it counts:
    # a causal LM's shifted labels, an encoder-decoder's whole)
    honours = abs(given - 2 * twice) <= 1e-5 * abs(given) and abs(given - mean) > 1e-5 * abs(mean)
    return {"trainer_passes_num_items": bool(accepts), "loss_mean": mean, "loss_given_2n": given,
            "honours_num_items": honours,
            # FM-LOSS-GA: the Trainer passes the count and stops dividing, the loss ignores it (k times too large);
            # FM-LOSS-GA-WEIGHTS: the loss takes the count but the class refuses it, so the Trainer averages the
            # micro-batches' means (unequal token counts weigh unequally)
            "true": bool(accepts) and not honours, "true_weights": not bool(accepts) and honours}


def lora_gradients(model, tok) -> dict:
    """PEFT all-linear LoRA; one backward; adapters whose B got no gradient, split into those the loss does
    not depend on (scaling the module's output leaves the loss exactly equal) and those it does."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    ids = sequences(tok, 1)[0][None]
    model = copy.deepcopy(model)  # PEFT wraps in place; the other reproductions need the model as built
    try:
        peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
        out = peft(input_ids=ids, labels=ids, use_cache=False)
    except Exception as exc:  # noqa: BLE001 - PEFT refusing the model, or its layer crashing, is the finding
        return {"peft_error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}", "unsupported": True}
    out.loss.backward()
    base = out.loss.detach()
    silent = [n for n, m in peft.named_modules() if hasattr(m, "lora_B") and "default" in getattr(m, "lora_B", {})
              and (m.lora_B["default"].weight.grad is None or not m.lora_B["default"].weight.grad.any())]
    on_path = []
    for name in silent:
        module = peft.get_submodule(name)
        hook = module.register_forward_hook(lambda _m, _a, o: o * 1.5)
        with torch.no_grad():
            moved = not torch.equal(peft(input_ids=ids, labels=ids, use_cache=False).loss, base)
        hook.remove()
        if moved:
            on_path.append(name)
    return {"no_gradient": silent[:10], "on_loss_path": on_path[:10], "nograd": bool(on_path), "unsupported": False}


LORA_KEYS = {"FM-LORA-NOGRAD": "nograd", "FM-LORA-UNSUPPORTED": "unsupported"}


def forward(model, tok) -> dict:
    """A text-only forward with labels, and one without: does it run, and does it predict the text it is given
    (logits for every input position)? Then the loss with sdpa against eager attention, where both run."""
    import torch

    ids = sequences(tok, 1)[0][None]
    out = {}
    try:
        model.train()  # a training step: forward and backward in train mode (Reformer refuses one in eval mode)
        loss = model(input_ids=ids, labels=ids, attention_mask=torch.ones_like(ids), use_cache=False).loss
        if loss is None:
            raise ValueError("given labels, the forward returns no loss")
        loss.backward()
        model.eval()
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits
        out["logit_positions"] = f"{logits.shape[1]} of {ids.shape[1]}"
        out["forward_fails"] = logits.shape[1] < ids.shape[1]
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        out["forward_fails"] = True
        model.eval()
        model.zero_grad(set_to_none=True)
    if not out["forward_fails"]:
        half = ids.shape[1] // 2
        other = ids.clone()
        other[0, half:] = (other[0, half:] + 7) % (len(tok) - 10) + 5
        with torch.no_grad():
            a = model(input_ids=ids, use_cache=False).logits[0, :half].float().log_softmax(-1)
            b = model(input_ids=other, use_cache=False).logits[0, :half].float().log_softmax(-1)
        out["future_leak"] = (a - b).abs().max().item()  # a causal model: exactly 0
        losses = {}
        for backend in ("sdpa", "eager"):
            try:
                model.set_attn_implementation(backend)
                with torch.no_grad():
                    losses[backend] = model(input_ids=ids, labels=ids, use_cache=False).loss.item()
            except Exception as exc:  # noqa: BLE001
                out[f"{backend}_error"] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"
        if len(losses) == 2:
            out["sdpa_vs_eager_rel"] = abs(losses["sdpa"] - losses["eager"]) / abs(losses["eager"])
    return out


# which plain measurement shows each ATTN001 failure mode
ATTN_KEYS = {"FM-MODEL-FORWARD": lambda p: p.get("forward_fails"),
             "FM-ATTN-MISMATCH": lambda p: p.get("sdpa_vs_eager_rel", 0) > 1e-4,
             "FM-ATTN-NONCAUSAL": lambda p: p.get("future_leak", 0) > FP32_ZERO}


PLAIN = {"PACK001": packing, "CCE001": fused_loss, "TRAIN001": train_loss, "LORA001": lora_gradients,
         "ATTN001": forward, "GA001": grad_accum}


def _audit_one(arch: str, codes: list[str], fixes: list[str], conn) -> None:
    import copy
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    out = {}
    try:
        tok, model = build(arch)
    except Exception as exc:  # noqa: BLE001
        conn.send({"build_error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"})
        return
    for code in codes:
        fn = PLAIN.get(code)
        if fn is None:
            out[code] = {"note": "no plain reproduction for this check"}
            continue
        try:
            out[code] = fn(copy.deepcopy(model), tok, fixes) if code == "TRAIN001" else fn(model, tok)
        except Exception as exc:  # noqa: BLE001
            out[code] = {"error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"}
        model.zero_grad(set_to_none=True)
    conn.send(out)


def audit(records: list[dict], timeout: float, workers: int = 2) -> list[dict]:
    sys.path.insert(0, str(HERE))
    from causes import CAUSES  # noqa: E402 - the curated causes beside this script

    # each architecture in a fresh process, forked from a server that has imported torch, transformers and peft
    # once (a spawn per architecture spent most of its time importing them)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "transformers", "peft", "onboard.fixtures.tiny", "onboard.fixtures.models"])
    rows: list[dict] = []
    todo = []
    for rec in records:
        arch, outcome = rec["arch"], rec["outcome"]
        # every finding: the blocking ones, and those a verified patch fixed (READY_WITH_FIXES rows)
        blocking = [c for c in (rec.get("report") or {}).get("checks", []) if c["status"] in ("FAIL", "ERROR")]
        if outcome in LIMIT_OUTCOMES or not blocking:
            rows.append({"arch": arch, "outcome": outcome, "check": "-", "finding": outcome, "class": "LIMIT",
                         "evidence": rec["reason"][:300], "cause": CAUSES.get((arch, outcome), "")})
            continue
        todo.append((rec, blocking))
    running: list[tuple] = []  # (rec, blocking, process, receiver, start)
    while todo or running:
        while todo and len(running) < workers:  # each architecture in a fresh process, `workers` at a time
            rec, blocking = todo.pop(0)
            codes = [c["code"] for c in blocking if c["status"] == "FAIL"]
            fixes = [c["fix"]["patch_id"] for c in rec["report"]["checks"] if (c.get("fix") or {}).get("verified")]
            receiver, sender = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_audit_one, args=(rec["arch"], codes, fixes, sender))
            proc.start()
            sender.close()
            running.append((rec, blocking, proc, receiver, time.monotonic()))
        time.sleep(0.2)
        for item in list(running):
            rec, blocking, proc, receiver, start = item
            if receiver.poll():
                try:
                    result = receiver.recv()
                except EOFError:
                    result = {"crash": f"the audit process died (exit {proc.exitcode})"}
            elif time.monotonic() - start > timeout:
                result = {"timeout": f"no result within {timeout:g} s"}
            elif not proc.is_alive():
                result = {"crash": f"the audit process died (exit {proc.exitcode})"}
            else:
                continue
            proc.kill()
            proc.join()
            running.remove(item)
            rows.extend(_classify(rec, blocking, result, time.monotonic() - start, CAUSES))
            arch = rec["arch"]
            print(f"{arch:28} " + ", ".join(f"{r['finding']} {r['class']}" for r in rows if r["arch"] == arch), flush=True)
    return sorted(rows, key=lambda r: r["arch"])


def _classify(rec: dict, blocking: list[dict], result: dict, seconds: float, causes: dict) -> list[dict]:
    arch, outcome = rec["arch"], rec["outcome"]
    rows = []
    for c in blocking:
        finding = f"{c['code']} {c.get('diagnosis') or c['status']}"
        plain = result.get(c["code"], result)
        if c["code"] == "PACK001" and c.get("diagnosis") in PACK_KEYS and PACK_KEYS[c["diagnosis"]] in plain:
            plain = {**plain, "true": plain[PACK_KEYS[c["diagnosis"]]] > FP32_ZERO}
        for code, keys in (("TRAIN001", TRAIN_KEYS), ("LORA001", LORA_KEYS)):
            if c["code"] == code and keys.get(c.get("diagnosis")) in plain:
                plain = {**plain, "true": bool(plain[keys[c["diagnosis"]]])}
        if c["code"] == "GA001" and c.get("diagnosis") == "FM-LOSS-GA-WEIGHTS" and "true_weights" in plain:
            plain = {**plain, "true": plain["true_weights"]}
        if c["code"] == "ATTN001" and c.get("diagnosis") in ATTN_KEYS:
            plain = {**plain, "true": bool(ATTN_KEYS[c["diagnosis"]](plain))}
        if c["status"] == "ERROR":
            klass = "LIMIT"
        elif "true" in plain:
            klass = "TRUE" if plain["true"] else "ARTIFACT"
        else:
            klass = "UNREPRODUCED"
        cause = causes.get((arch, c.get("diagnosis") or c["code"])) or causes.get(c.get("diagnosis") or "", "")
        if (c.get("fix") or {}).get("verified"):
            finding += f" (fixed: {c['fix']['patch_id']})"
        rows.append({"arch": arch, "outcome": outcome, "check": c["code"], "finding": finding, "class": klass,
                     "plain": plain, "cause": cause, "seconds": round(seconds, 1)})
    return rows


def render(rows: list[dict], source: str) -> str:
    from collections import Counter

    counts = Counter(r["class"] for r in rows)
    lines = [f"# Audit of {source}", "",
             "Every finding of every non-READY row, reproduced with plain torch / transformers / peft "
             "(`bench/audit/reproduce.py`), classified TRUE (the plain script sees it; the cause names the "
             "transformers source), ARTIFACT (it does not: onboard's false alarm) or LIMIT (onboard's limit: "
             "cannot build small, missing library, crashed check, time limit; no claim about the architecture).", "",
             ", ".join(f"{k} **{v}**" for k, v in counts.most_common()), "",
             "| architecture | outcome | finding | class | plain measurement | cause |", "|---|---|---|---|---|---|"]
    for r in rows:
        plain = r.get("plain") or {}
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in plain.items() if k != "true")[:220] or r.get("evidence", "")[:220]
        lines.append(f"| {r['arch']} | {r['outcome']} | {r['finding']} | {r['class']} | {_cell(shown)} | {_cell(r['cause'])} |")
    return "\n".join(lines) + "\n"


def _fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else v


def _cell(text) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--arch", default=None)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    records = [json.loads(line) for line in args.sweep.read_text().splitlines() if line.strip()]
    records = [r for r in records if r["outcome"] != "READY"]
    if args.arch:
        wanted = set(args.arch.split(","))
        records = [r for r in records if r["arch"] in wanted]
    rows = audit(sorted(records, key=lambda r: r["arch"]), args.timeout, args.workers)
    args.out.with_suffix(".jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    args.out.with_suffix(".md").write_text(render(rows, args.sweep.name))
    from collections import Counter

    print(Counter(r["class"] for r in rows))


if __name__ == "__main__":
    main()
