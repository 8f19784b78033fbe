"""False-negative audit: does a model onboard calls ready train exactly as its samples alone would?

For every READY_WITH_FIXES row (and with --ready, every READY row) of a sweep file, outside onboard's check code:
the model `tiny:ARCH` builds (fp32, dropout fields of its configs set to 0), LoRA from the report through the public
API (`onboard.lora_config`), every lora_B drawn at random (PEFT starts it at zero, which leaves lora_A without a
gradient), the report's patches through `onboard.apply_patches(..., cce="on")` and its collator through
`onboard.collator`: what a user training with the HF Trainer runs.

The trained step: the HF Trainer, 4 samples (the three shortest chats and one of the chats one after another,
longer than the model's sliding window or attention chunk where its config declares one shorter than 2,048 tokens,
onboard's --max-length), per_device_train_batch_size
2 and gradient_accumulation_steps 2, so the two micro-batches hold unequal numbers of trained tokens; no clipping;
every adapter's gradient kept just before the optimizer steps, and the loss of each micro-batch as the Trainer
computes it.
The truth: the same 4 samples run one by one (no labels given to the forward) in train mode, each sample's next-token
cross-entropy summed over its trained tokens and divided by the trained tokens of all four, backward: the token-mean
loss and its gradient.

A row passes when the step's loss is within 1e-5 relative and the gradients within 1e-4 relative (the norm of the
difference over the norm) of the truth: fp32 rounding. Findings are written as JSON lines next to the sweep and
summarised as Markdown.

Run: python bench/audit/exact.py SWEEP.jsonl [--out bench/audit/exact.jsonl] [--md bench/audit/exact.md]
     [--arch a,b] [--ready]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-4
MAX_LENGTH = 2048  # onboard's default --max-length: no training sample is longer, so no longer window can slide
IGNORE = -100


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:240]


def build(arch: str, attn: str | None, layers: int | None = None):
    """tiny:ARCH as onboard builds it (a ForCausalLM class, else the ForConditionalGeneration one), fp32, with the
    report's attention implementation and layer count (tiny:ARCH:N); every dropout and jitter set to 0 (the truth
    must be deterministic)."""
    from onboard.harness.loading import tiny_auto

    from onboard.fixtures.models import tiny_tokenizer
    from onboard.fixtures.tiny import build_tiny, config_for

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    auto = tiny_auto(arch)

    def make(config):
        cls = auto._model_mapping[type(config)]
        return cls._from_config(config_for(cls, config), dtype=torch.float32, attn_implementation=attn)

    # make() reads `attn` when called: the retry below clears it

    try:
        model = build_tiny(arch, len(tok), make, layers=layers)
    except Exception:  # noqa: BLE001 - a composite model whose towers refuse the report's backend: transformers' choice
        attn = None
        model = build_tiny(arch, len(tok), make, layers=layers)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for key, value in list(vars(module).items()):
            if NOISE(key) and isinstance(value, float):
                setattr(module, key, 0.0)
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        for key, value in list(vars(config).items()):
            if NOISE(key) and isinstance(value, float):
                setattr(config, key, 0.0)
    return tok, model


def NOISE(key: str) -> bool:  # noqa: N802 - train-mode randomness by name: dropout, PhiMoE's router jitter,
    # LayerDrop (M2M100, NLLB-MoE: a layer skipped at random in training)
    return any(word in key for word in ("dropout", "jitter", "noise", "layerdrop"))


def samples(tok, model, seq2seq: bool = False):
    """The three shortest built-in chats, and one longer than the widest window or chunk the config declares
    (the chats one after another), as {input_ids, labels} with assistant-only labels; seq2seq: the chat up to its
    last reply as input_ids, the reply as labels (strung together for the long one)."""
    from onboard.harness.data import BUILTIN_CHATS, read_chats, tokenize_chat, tokenize_seq2seq

    tokenize = tokenize_seq2seq if seq2seq else tokenize_chat
    chats = [tokenize(tok, chat, tok.chat_template, MAX_LENGTH) for chat in read_chats(BUILTIN_CHATS)]
    chats = [c for c in chats if any(label != IGNORE for label in c.labels[0 if seq2seq else 1:])]
    short = sorted(chats, key=len)[:3]
    text = model.config.get_text_config()
    spans = [v for v in (getattr(text, "sliding_window", None), getattr(text, "attention_chunk_size", None))
             if isinstance(v, int) and not isinstance(v, bool) and 0 < v < MAX_LENGTH]
    length = min(max(spans) + 32, MAX_LENGTH) if spans else len(sorted(chats, key=len)[3])
    ids, labels = [], []
    while len(labels if seq2seq else ids) < length:
        for c in chats:
            ids, labels = ids + c.input_ids, labels + c.labels
    return [{"input_ids": c.input_ids, "labels": c.labels} for c in short] + [
        {"input_ids": ids[:length], "labels": labels[:length]}]


def randomise_lora_b(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def truth(model, data, positions: bool, start: int = 0, seq2seq: bool = False):
    """Token-mean next-token loss of the samples run one by one, and every adapter's gradient of it; seq2seq: the
    cross-entropy of the decoder's logits at t against labels[t] (the labels, shifted by the model, its input)."""
    first = 0 if seq2seq else 1
    total = sum(sum(label != IGNORE for label in d["labels"][first:]) for d in data)
    model.zero_grad(set_to_none=True)
    model.train()
    loss = 0.0
    for d in data:
        ids = torch.tensor([d["input_ids"]])
        labels = torch.tensor([d["labels"]])
        # the sample as the training collator sends a row of it alone: with position_ids when it packs, without
        # when it pads (a RoBERTa-family model then numbers positions from the ids, as in training)
        # (from where the report measured the model numbers a sample alone: RoBERTa's padding_idx + 1)
        extra = {"position_ids": torch.arange(start, start + ids.shape[1])[None]} if positions else {}
        if seq2seq:  # the decoder's input as DataCollatorForSeq2Seq builds it; no labels, so a fused loss stays off
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            prepare = getattr(base, "prepare_decoder_input_ids_from_labels", None)
            fed = {"decoder_input_ids": prepare(labels=labels.clone())} if callable(prepare) else {"labels": labels}
            logits = model(input_ids=ids, use_cache=False, **fed).logits[0].float()
            part = F.cross_entropy(logits, labels[0], ignore_index=IGNORE, reduction="sum") / total
        else:
            logits = model(input_ids=ids, use_cache=False, **extra).logits[0, :-1].float()
            part = F.cross_entropy(logits, labels[0, 1:], ignore_index=IGNORE, reduction="sum") / total
        part.backward()
        loss += part.item()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss, grads


def trainer_step(model, data, collator, out):
    """One optimizer step of the HF Trainer over 2 micro-batches of 2 samples; (summed micro-batch losses,
    gradients before the optimizer, per-micro-batch trained tokens)."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    class Keep(TrainerCallback):
        grads = None

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
                          if p.requires_grad and p.grad is not None}

    args = TrainingArguments(out, per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=1,
                             learning_rate=1e-3, max_grad_norm=0.0, report_to=[], use_cpu=True, save_strategy="no",
                             logging_steps=1, seed=0, data_seed=0, dataloader_drop_last=False, disable_tqdm=True,
                             remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator)
    trainer.remove_callback(PrinterCallback)
    keep = Keep()
    trainer.add_callback(keep)
    losses = []
    compute = trainer.compute_loss

    def recording(*a, **k):
        result = compute(*a, **k)
        losses.append(float((result[0] if isinstance(result, tuple) else result).detach()))
        return result

    trainer.compute_loss = recording
    trainer.train()
    # the Trainer divides each micro-batch's loss by the steps unless the model takes num_items_in_batch
    steps = 2
    loss = sum(losses) if trainer.model_accepts_loss_kwargs else sum(losses) / steps
    return loss, keep.grads, bool(trainer.model_accepts_loss_kwargs)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def grad_rel(got: dict, want: dict) -> float:
    names = sorted(set(want) | set(got))
    diff = sum(float(((got.get(n, torch.zeros_like(want.get(n)))) - want.get(n, torch.zeros_like(got.get(n)))).float()
                     .pow(2).sum()) for n in names)
    norm = sum(float(g.float().pow(2).sum()) for g in want.values())
    return (diff / max(norm, 1e-30)) ** 0.5


def audit(row: dict) -> dict:
    import onboard
    from onboard.harness.result import RunReport
    from peft import get_peft_model

    arch = row["arch"]
    report = RunReport.from_dict(row["report"])
    depth = str(report.model.get("id", "")).removeprefix(f"tiny:{arch}").removeprefix(":")
    tok, model = build(arch, report.model.get("attention"), int(depth) if depth.isdigit() else None)
    if callable(getattr(model, "set_default_language", None)):  # the setup call the report names (X-MOD)
        model.set_default_language(list(model.config.languages)[0])
    seq2seq = report.model.get("task") == "seq2seq"
    peft_model = get_peft_model(model, onboard.lora_config(report, model))
    randomise_lora_b(peft_model)
    data = samples(tok, model, seq2seq)
    # the truth runs with the patches on too: they act on packed rows and on the Trainer's loss, never on a sample
    # run alone without labels (a forward that requires token_type_ids in training gets them from its patch)
    applied = onboard.apply_patches(peft_model, report, cce="on")
    collator = onboard.collator(report, tok)
    want_loss, want_grads = truth(peft_model, data, positions=type(collator).__name__ != "RightPadding",
                                  start=report.model.get("position_start") or 0, seq2seq=seq2seq)
    with tempfile.TemporaryDirectory() as out:
        got_loss, got_grads, accepts = trainer_step(peft_model, data, collator, out)
    applied.revert()
    counts = [sum(label != IGNORE for label in d["labels"][0 if seq2seq else 1:]) for d in data]
    return {"arch": arch, "verdict": row["outcome"], "patches": report.verified_patches,
            "collator": type(collator).__name__, "trainer_passes_num_items": accepts,
            "tokens": [len(d["input_ids"]) for d in data], "trained_tokens": counts,
            "loss": got_loss, "loss_truth": want_loss, "loss_rel": rel(got_loss, want_loss),
            "grad_rel": grad_rel(got_grads or {}, want_grads),
            "exact": rel(got_loss, want_loss) <= LOSS_RTOL and grad_rel(got_grads or {}, want_grads) <= GRAD_RTOL}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep")
    ap.add_argument("--out", default="bench/audit/exact.jsonl")
    ap.add_argument("--md", default="bench/audit/exact.md")
    ap.add_argument("--arch", default="")
    ap.add_argument("--ready", action="store_true", help="READY rows too")
    args = ap.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    wanted = set(filter(None, args.arch.split(",")))
    verdicts = {"READY_WITH_FIXES", "READY"} if args.ready else {"READY_WITH_FIXES"}
    rows = [json.loads(line) for line in open(args.sweep)]
    rows = [r for r in rows if r.get("outcome") in verdicts and r.get("report") and (not wanted or r["arch"] in wanted)]
    results = []
    start = time.time()
    with open(args.out, "w") as f:
        for row in rows:
            t = time.time()
            try:
                result = audit(row)
            except Exception as exc:  # noqa: BLE001 - a row that cannot run is recorded, not fatal
                result = {"arch": row["arch"], "verdict": row["outcome"], "error": first_line(exc),
                          "trace": traceback.format_exc(limit=3)[-600:]}
            result["seconds"] = round(time.time() - t, 2)
            results.append(result)
            f.write(json.dumps(result) + "\n")
            f.flush()
            mark = "error" if "error" in result else ("exact" if result["exact"] else "NOT EXACT")
            print(f"{row['arch']:28s} {mark:9s} " + (result.get("error", "") or
                  f"loss {result['loss_rel']:.1e} grads {result['grad_rel']:.1e} {result['collator']}"), flush=True)
    write_markdown(results, args.sweep, args.md, time.time() - start)


def write_markdown(results: list[dict], sweep: str, path: str, seconds: float) -> None:
    ok = [r for r in results if r.get("exact")]
    bad = [r for r in results if "error" not in r and not r.get("exact")]
    err = [r for r in results if "error" in r]
    lines = [f"# Exactness audit of `{sweep}` ({datetime.date.today()}, `bench/audit/exact.py`)", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"{len(results)} rows in {seconds / 60:.1f} min on the CPU: **{len(ok)} exact**, {len(bad)} not exact, "
             f"{len(err)} could not run here.", "",
             "| arch | verdict | collator | trained tokens | loss rel | gradients rel | result |", "|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['arch']} | {r['verdict']} | | | | | error: {r['error'].replace('|', '/')} |")
        else:
            lines.append(f"| {r['arch']} | {r['verdict']} | {r['collator']} | {r['trained_tokens']} | {r['loss_rel']:.1e} "
                         f"| {r['grad_rel']:.1e} | {'exact' if r['exact'] else '**not exact**'} |")
    Path(path).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
