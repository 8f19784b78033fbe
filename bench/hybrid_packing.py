"""Packed samples on hybrid (linear-attention / state-space) models, in bf16 on the GPU: are they kept apart when the
collator sends sample boundaries, and what does packing gain over right-padded micro-batches?

For each shipped config (default: config:qwen3.5-9b-8l, a Gated DeltaNet hybrid, and config:nemotron-h-8b-8l, a
Mamba-2 hybrid), random weights, LoRA all-linear r=16 (onboard's LoraConfig and its LoRA-config patches):

(a) isolation. One packed row of three built-in chats (A, B, C) with restarting position_ids. A's tokens are replaced
    by random ids; the largest change of B's and C's next-token log-probs is the leak (0 = isolated). Run with the
    boundaries DataCollatorWithFlattening(return_seq_idx=True, return_flash_attn_kwargs=True) sends
    (onboard.patches.packing.sample_boundaries: seq_idx, cu_seq_lens_q/k, max_length_q/k) and with position_ids
    alone, in train mode (the path training runs: Mamba-2's fused split-conv1d-scan kernel) and eval mode.
    `vs_alone` is B's and C's log-prob change against each run alone (the numerical noise of packing).
(b) throughput. Forward + backward + AdamW step on LoRA: packed rows of ~--budget tokens with boundaries, vs
    right-padded micro-batches of --batch samples with an attention mask, the same stream of samples. Real (non-pad)
    tokens/s over --steps timed steps after --warmup, and peak memory.
    The loss is a chunked cross-entropy over lm_head (--loss-chunk tokens a chunk, recomputed in backward) in both
    modes, so the logits of a large-vocabulary 16k-token row never exist at once.

Which implementation each kernel lookup of transformers (use_kernel_func_from_hub_with_fallback) resolved to is
reported, with every "falling back to its reference PyTorch implementation" / "can't keep packed sequences apart"
message transformers logged and the phase it came in.

Data: the 16 built-in chats (onboard/fixtures/data/chat.jsonl) tokenized with onboard's built-in tokenizer (what
config: models get), cycled in shuffled epochs to fill the rows.

Run: PYTHONUNBUFFERED=1 python bench/hybrid_packing.py [--models ...] [--out FILE]   (--tiny: small shapes, a CPU
smoke test of the script itself).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import random
import sys
import time
from contextlib import nullcontext

import torch
from torch.utils.checkpoint import checkpoint

from onboard.fixtures.models import config_path, tiny_tokenizer
from onboard.harness.data import BUILTIN_CHATS, IGNORE, read_chats, tokenize_chat
from onboard.patches import get_patch, ids, lora_config
from onboard.patches.packing import RightPadding, sample_boundaries

DEFAULT_MODELS = ["qwen3.5-9b-8l", "nemotron-h-8b-8l"]
KERNEL_PACKAGES = ["fla", "causal_conv1d", "mamba_ssm", "triton", "transformers", "peft", "torch"]

# --tiny: the same architectures at toy sizes (CPU smoke test of this script)
TINY = {
    "qwen3_5_text": dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=32, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32,
                         linear_value_head_dim=32, vocab_size=1024,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000000, "partial_rotary_factor": 0.25,
                                          "mrope_section": [2, 1, 1], "mrope_interleaved": True}),
    "nemotron_h": dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=32, attention_head_dim=32, mamba_num_heads=8, mamba_head_dim=16, n_groups=2,
                       ssm_state_size=16, chunk_size=16, vocab_size=1024),
}


# ---- transformers' kernel lookups and its fallback messages -------------------------------------------------

class FallbackLog(logging.Handler):
    """Collects transformers' kernel-fallback warnings with the phase they came in."""

    KEYS = ("falling back", "can't keep packed", "Failed to load kernel", "fast path is not available")

    def __init__(self):
        super().__init__(logging.WARNING)
        self.phase = "load"
        self.records: list[dict] = []

    def emit(self, record):
        msg = record.getMessage()
        if any(k in msg for k in self.KEYS):
            self.records.append({"phase": self.phase, "message": msg.splitlines()[0][:300]})


def kernel_lookups(model) -> dict[str, str]:
    """Each kernel-or-fallback function of the model's modeling module -> the implementation it resolved to."""
    module = sys.modules[type(model).__module__]
    found = {}
    for name, fn in sorted(vars(module).items()):
        closure = getattr(fn, "__closure__", None)
        if not callable(fn) or not closure:
            continue
        try:
            cells = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in closure)))
        except ValueError:  # an empty cell
            continue
        if "implementation" in cells and "torch_function" in cells:
            impl = cells["implementation"]
            found[name] = ("torch reference" if impl is cells["torch_function"]
                           else f"{getattr(impl, '__module__', '?')}.{getattr(impl, '__name__', '?')}")
    return found


def versions() -> dict[str, str]:
    out = {}
    for pkg in KERNEL_PACKAGES:
        try:
            mod = importlib.import_module(pkg)
            out[pkg] = getattr(mod, "__version__", "?")
        except Exception as exc:  # noqa: BLE001 - what is missing, and why, is the finding
            out[pkg] = f"not importable: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    return out


# ---- model, LoRA, data -----------------------------------------------------------------------------------

def build(name: str, device: torch.device, dtype: torch.dtype, tiny: bool):
    """As onboard's config loader builds it (random weights on the device), sdpa attention, LoRA all-linear r=16."""
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = json.loads(config_path(name).read_text())
    fields = {k: v for k, v in fields.items() if not k.startswith("_")}
    model_type = fields.pop("model_type")
    if tiny:
        fields.update(TINY[model_type])
    config = AutoConfig.for_model(model_type, **fields)
    config.use_cache = False
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    patches = [get_patch(p) for p in (ids.LORA_WRAPPED_LINEAR, ids.LORA_EXCLUDE_UNWRAPPABLE)]
    patches = [p for p in patches if p.applies_to(model) is None]
    lora = lora_config(model, None, patches, r=16, alpha=32)
    peft_model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    info = {"params": sum(p.numel() for p in model.parameters()) - trainable, "lora_params": trainable,
            "lora_patches": [p.id for p in patches], "lora_excluded": sorted(lora.exclude_modules or []),
            "layer_types": list(getattr(config, "layer_types", None) or [])}
    return peft_model, info


def chat_examples():
    tokenizer = tiny_tokenizer()
    examples = [tokenize_chat(tokenizer, chat, tokenizer.chat_template, 4096) for chat in read_chats(BUILTIN_CHATS)]
    return tokenizer, examples


class SampleStream:
    """Indices into the examples, in shuffled epochs, forever; one index can be put back."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.rng, self.queue = n, random.Random(seed), []

    def next(self) -> int:
        if not self.queue:
            order = list(range(self.n))
            self.rng.shuffle(order)
            self.queue = order
        return self.queue.pop(0)

    def put_back(self, i: int) -> None:
        self.queue.insert(0, i)


def long_cu(bounds: dict) -> dict:
    """cu_seq_lens_q/k as int64 (FLA documents cu_seqlens as a LongTensor; the collator sends int32)."""
    return {k: v.long() if k.startswith("cu_seq_lens") else v for k, v in bounds.items()}


def packed_batch(examples, stream: SampleStream, budget: int, cu_long: bool = False) -> dict:
    """One row of whole samples up to `budget` tokens, its position_ids and boundaries (onboard's sample_boundaries,
    what the packing collator sends)."""
    ids_, labels, pos = [], [], []
    while True:
        i = stream.next()
        ex = examples[i]
        if ids_ and len(ids_) + len(ex) > budget:
            stream.put_back(i)
            break
        ids_ += ex.input_ids
        labels += ex.labels
        pos += list(range(len(ex)))
    position_ids = torch.tensor([pos])
    batch = {"input_ids": torch.tensor([ids_]), "labels": torch.tensor([labels]), "position_ids": position_ids}
    bounds = sample_boundaries(position_ids)
    batch.update(long_cu(bounds) if cu_long else bounds)
    return batch


def padded_batch(examples, stream: SampleStream, size: int, pad_id: int) -> dict:
    samples = [examples[stream.next()] for _ in range(size)]
    return RightPadding(pad_id)([{"input_ids": s.input_ids, "labels": s.labels} for s in samples])


def to(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ---- loss and steps --------------------------------------------------------------------------------------

def _ce_sum(h, t, weight):
    return torch.nn.functional.cross_entropy((h @ weight.t()).float(), t, reduction="sum")


def lean_loss(peft_model, batch: dict, chunk: int):
    """Mean next-token cross-entropy over the trained labels: decoder once, lm_head + CE per chunk of tokens."""
    causal_lm = peft_model.get_base_model()
    decoder, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = decoder(**inputs, use_cache=False).last_hidden_state
    targets = batch["labels"][:, 1:].reshape(-1)
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    keep = targets != IGNORE
    hidden, targets = hidden[keep], targets[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, targets.numel(), chunk):
        total = total + checkpoint(_ce_sum, hidden[s:s + chunk], targets[s:s + chunk], head.weight, use_reentrant=False)
    return total / max(targets.numel(), 1)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_run(peft_model, make_batch, device, warmup: int, steps: int, chunk: int, log: FallbackLog, phase: str):
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    peft_model.train()
    times, real, rows, widths, losses = [], 0, 0, [], []
    log.phase = phase
    if device.type == "cuda":
        torch.cuda.empty_cache()
    for step in range(warmup + steps):
        batch = to(make_batch(), device)
        if step == warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t0 = time.perf_counter()
        loss = lean_loss(peft_model, batch, chunk)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        dt = time.perf_counter() - t0
        losses.append(round(float(loss.detach()), 4))
        if step >= warmup:
            times.append(dt)
            mask = batch.get("attention_mask")
            real += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
            rows += batch["input_ids"].shape[0]
            widths.append(batch["input_ids"].shape[1])
    out = {"tokens_per_s": round(real / sum(times), 1), "real_tokens_per_step": round(real / steps, 1),
           "rows_per_step": rows / steps, "mean_width": round(sum(widths) / len(widths), 1),
           "step_ms_median": round(1000 * sorted(times)[len(times) // 2], 2),
           "step_ms_mean": round(1000 * sum(times) / len(times), 2), "step_ms": [round(1000 * t, 1) for t in times],
           "first_last_loss": [losses[0], losses[-1]]}
    if device.type == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del opt
    return out


# ---- isolation -------------------------------------------------------------------------------------------

def isolation(peft_model, examples, picks, device, log: FallbackLog, vocab: int, seed: int = 0,
              cu_long: bool = False) -> dict:
    """Perturb sample A of a packed row A+B+C; the largest change of B's and C's next-token log-probs."""
    a, b, c = (examples[i].input_ids for i in picks)
    rng = random.Random(seed)
    a2 = [rng.randrange(3, vocab) for _ in a]
    spans = [(0, len(a)), (len(a), len(a) + len(b)), (len(a) + len(b), len(a) + len(b) + len(c))]
    positions = torch.tensor([list(range(len(a))) + list(range(len(b))) + list(range(len(c)))])
    bounds = sample_boundaries(positions)
    if cu_long:
        bounds = long_cu(bounds)
    later = [p for s, e in spans[1:] for p in range(s, e - 1)]  # positions whose next token is in the same sample

    def logprobs(row, with_bounds, pos=positions):
        inputs = {"input_ids": torch.tensor([row]), "position_ids": pos}
        if with_bounds:
            inputs.update(bounds)
        logits = peft_model(**to(inputs, device), use_cache=False).logits[0].float()
        lp = logits.log_softmax(-1)
        nxt = torch.tensor(row[1:] + [0], device=device)
        return lp.gather(-1, nxt[:, None])[:, 0]

    # the DataCollatorWithFlattening boundaries must be what sample_boundaries sends
    from transformers import DataCollatorWithFlattening

    collator = DataCollatorWithFlattening(return_seq_idx=True, return_flash_attn_kwargs=True, return_position_ids=True)
    collated = collator([{"input_ids": x} for x in (a, b, c)])

    def flat(x):
        return torch.as_tensor(x).reshape(-1).long()

    same = all(torch.equal(flat(collated[k]), flat(bounds[k])) for k in ("seq_idx", "cu_seq_lens_q", "cu_seq_lens_k")) \
        and all(int(collated[k]) == int(bounds[k]) for k in ("max_length_q", "max_length_k"))
    result = {"samples": [len(a), len(b), len(c)], "collator_matches_sample_boundaries": bool(same)}

    for mode in ("train", "eval"):
        peft_model.train(mode == "train")
        alone = {}
        for k, (s, e) in ((1, spans[1]), (2, spans[2])):
            seq = [a, b, c][k]
            log.phase = f"isolation/{mode}/alone"
            try:
                with torch.no_grad():
                    alone[s] = logprobs(seq, False, torch.arange(len(seq))[None])
            except Exception as exc:  # noqa: BLE001
                alone[s] = exc
        for with_bounds in (True, False):
            key = f"{mode}/{'boundaries' if with_bounds else 'position_ids_only'}"
            if with_bounds and cu_long:
                key += "_int64"
            log.phase = f"isolation/{key}"
            try:
                with torch.no_grad():
                    base = logprobs(a + b + c, with_bounds)
                    pert = logprobs(a2 + b + c, with_bounds)
                idx = torch.tensor(later, device=device)
                leak = (base[idx] - pert[idx]).abs()
                row = {"max_logprob_change_later_samples": float(leak.max()),
                       "mean_logprob_change_later_samples": float(leak.mean()),
                       "tokens_changed": int((leak > 0).sum()), "tokens_compared": len(later)}
                noise = []
                for s, e in spans[1:]:
                    if isinstance(alone.get(s), torch.Tensor):
                        noise.append(float((base[s:e - 1] - alone[s][: e - s - 1]).abs().max()))
                if noise:
                    row["max_logprob_change_vs_alone"] = max(noise)
                result[key] = row
            except Exception as exc:  # noqa: BLE001 - a refusal (ValueError without the kernel package) is a finding
                result[key] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    peft_model.train()
    return result


# ---- driver ----------------------------------------------------------------------------------------------

def run_model(name, args, device, dtype, log: FallbackLog, emit):
    log.phase = "build"
    t0 = time.perf_counter()
    peft_model, info = build(name, device, dtype, args.tiny)
    base = peft_model.get_base_model()
    emit({"model": name, "kind": "build", "class": type(base).__name__, "build_s": round(time.perf_counter() - t0, 1),
          **info, "kernel_lookups": kernel_lookups(base)})
    tokenizer, examples = chat_examples()
    vocab = min(len(tokenizer), base.config.vocab_size)
    picks = args.picks
    res = isolation(peft_model, examples, picks, device, log, vocab, cu_long=args.cu_long)
    emit({"model": name, "kind": "isolation", "picks": picks, **res})

    pad_id = tokenizer.pad_token_id
    for mode in args.modes:
        stream = SampleStream(len(examples), seed=1)  # the same samples in the same order for both modes
        if mode == "packed":
            def make(stream=stream):
                return packed_batch(examples, stream, args.budget, args.cu_long)
        else:
            def make(stream=stream):
                return padded_batch(examples, stream, args.batch, pad_id)
        try:
            out = train_run(peft_model, make, device, args.warmup, args.steps, args.loss_chunk, log, f"train/{mode}")
        except torch.OutOfMemoryError as exc:
            out = {"error": f"OutOfMemoryError: {str(exc).splitlines()[0][:200]}"}
        except Exception as exc:  # noqa: BLE001
            out = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
        emit({"model": name, "kind": "train", "mode": mode,
              "setup": (f"packed rows of <= {args.budget} tokens, position_ids + seq_idx + cu_seq_lens_q/k "
                        "+ max_length_q/k" if mode == "packed"
                        else f"{args.batch} samples a batch, right-padded, attention_mask"),
              **out})
    emit({"model": name, "kind": "fallback_messages", "messages": log.records})
    log.records = []
    del peft_model, base
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--modes", nargs="+", default=["packed", "padded"], choices=["packed", "padded"])
    p.add_argument("--budget", type=int, default=16384, help="tokens a packed row holds at most")
    p.add_argument("--batch", type=int, default=8, help="samples a right-padded micro-batch holds")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--loss-chunk", type=int, default=4096)
    p.add_argument("--picks", type=int, nargs=3, default=[7, 11, 15],
                   help="built-in chats A B C of the isolation row")
    p.add_argument("--cu-long", action="store_true",
                   help="send cu_seq_lens_q/k as int64 instead of the collator's int32")
    p.add_argument("--tiny", action="store_true", help="toy sizes of the same architectures (smoke test)")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    log = FallbackLog()
    logging.getLogger("transformers").addHandler(log)
    sink = open(args.out, "a") if args.out else nullcontext()

    def emit(row):
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            sink.write(line + "\n")
            sink.flush()

    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    emit({"kind": "env", "card": card, "dtype": str(dtype).removeprefix("torch."), "versions": versions(),
          "args": vars(args)})
    for name in args.models:
        try:
            run_model(name, args, device, dtype, log, emit)
        except Exception as exc:  # noqa: BLE001
            emit({"model": name, "kind": "error", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.out:
        sink.close()


if __name__ == "__main__":
    main()
