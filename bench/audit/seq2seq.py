"""Evidence for probing encoder-decoder models as seq2seq (prompt -> encoder input_ids, response -> labels).

Run: python bench/audit/seq2seq.py   (CPU, fp32, about a minute on 2 cores)

Models: tiny:florence2 and tiny:t5gemma2 as onboard builds them (ModelSession), and for comparison a T5 and a
BART built here through AutoModelForSeq2SeqLM (onboard's tiny builder gives no seq2seq class for them: tiny:t5
is refused, tiny:bart is BartForCausalLM). tiny:llama is the decoder-only contrast of the detection probe.
Samples: the built-in chats; prompt = the chat up to the last assistant turn (chat template, generation prompt),
response = the last assistant turn's content tokens + eos. Text only (no pixel_values). Writes nothing.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
import warnings

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")
torch.set_num_threads(2)
IGNORE = -100
START = time.perf_counter()


def log(msg: str = "") -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- models and data

def build_models():
    from transformers import AutoModelForSeq2SeqLM, BartConfig, T5Config
    from transformers.utils import logging as hf_logging

    from onboard.harness.session import ModelSession

    hf_logging.set_verbosity_error()
    sessions = {arch: ModelSession(model=f"tiny:{arch}", device="cpu") for arch in ("florence2", "t5gemma2", "llama")}
    tok = sessions["florence2"].tokenizer
    vocab = len(tok)
    torch.manual_seed(0)
    t5 = AutoModelForSeq2SeqLM.from_config(T5Config(
        vocab_size=vocab, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
        dropout_rate=0.0, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0))
    bart = AutoModelForSeq2SeqLM.from_config(BartConfig(
        vocab_size=vocab, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=1024,
        dropout=0.0, attention_dropout=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2))
    models = {"florence2": sessions["florence2"].model, "t5gemma2": sessions["t5gemma2"].model, "t5": t5, "bart": bart}
    for m in models.values():
        m.eval()
    return models, sessions, tok


def seq2seq_samples(session, tok):
    """(prompt ids, response ids) per chat: the response is the last assistant turn's content + eos."""
    from onboard.harness.data import FALLBACK_TEMPLATE, read_chats

    template = session.chat_template or FALLBACK_TEMPLATE
    samples = []
    for chat in read_chats(session.data_path):
        k = max(i for i, m in enumerate(chat) if m["role"] == "assistant")
        prompt = tok.apply_chat_template(chat[:k], chat_template=template, tokenize=False, add_generation_prompt=True)
        p = tok(prompt, add_special_tokens=False)["input_ids"][:512]
        r = tok(chat[k]["content"], add_special_tokens=False)["input_ids"][:255] + [tok.eos_token_id]
        samples.append((p, r))
    return samples


def t(ids):
    return torch.tensor([ids])


def fwd(model, p, r, **kw):
    p = t(p) if isinstance(p, list) else p
    r = t(r) if isinstance(r, list) else r
    mask = kw.pop("attention_mask", torch.ones_like(p))
    return model(input_ids=p, attention_mask=mask, labels=r, use_cache=False, **kw)


def token_logp(logits, labels):
    """log p(label) per position (0 where the label is ignored)."""
    lp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return lp.masked_fill(labels == IGNORE, 0.0)


def pad_batch(pairs, pad_id):
    lp, lr = max(len(p) for p, _ in pairs), max(len(r) for _, r in pairs)
    ids = torch.tensor([p + [pad_id] * (lp - len(p)) for p, _ in pairs])
    mask = torch.tensor([[1] * len(p) + [0] * (lp - len(p)) for p, _ in pairs])
    labels = torch.tensor([r + [IGNORE] * (lr - len(r)) for _, r in pairs])
    return ids, mask, labels


def fmt(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


# ---------------------------------------------------------------- probes

@torch.no_grad()
def detection(models, llama, samples):
    """What onboard could auto-detect from behaviour: logits of an input-only forward, and of a forward whose
    labels are shorter than the input (a decoder-only model needs labels as long as its input)."""
    log("\n[0] detection probe: logits length with input_ids only (A tokens), and with labels of B != A tokens")
    p, r = samples[1]
    a, b = len(p), len(r)
    for name, model in {**models, "llama (decoder-only)": llama}.items():
        try:
            n_in = model(input_ids=t(p), use_cache=False).logits.shape[1]
        except Exception as exc:  # noqa: BLE001
            n_in = f"error {type(exc).__name__}"
        try:
            n_lab = fwd(model, p, r).logits.shape[1]
        except Exception as exc:  # noqa: BLE001
            n_lab = f"error {type(exc).__name__}: {str(exc).splitlines()[0][:60]}"
        log(f"  {name:22s} is_encoder_decoder={model.config.is_encoder_decoder!s:5s} A={a} B={b} "
            f"input-only logits={n_in}  with labels logits={n_lab}")


def _alignment(model, samples):
    d_noshift, d_shift, width, losses, covers = 0.0, math.inf, None, [], True
    with torch.no_grad():
        for p, r in samples:
            out = fwd(model, p, r)
            logits, labels = out.logits[0].float(), t(r)[0]
            covers &= logits.shape[0] == len(r)
            width = logits.shape[-1]
            d_noshift = max(d_noshift, abs(out.loss.item() - F.cross_entropy(logits, labels).item()))
            d_shift = min(d_shift, abs(out.loss.item() - F.cross_entropy(logits[:-1], labels[1:]).item()))
            losses.append(out.loss.item())
    return d_noshift, d_shift, covers, sum(losses) / len(losses), math.log(width)


def loss_alignment(model, samples, pad_id):
    """[1] the model's loss vs the unshifted CE of its logits, and vs the shifted (next-token) CE: at random
    init (near-uniform logits, so the two CEs are close) and after 10 full-parameter AdamW steps on 4 samples."""
    d0, s0, covers, init, ln_v = _alignment(model, samples)
    trained = copy.deepcopy(model).train()
    ids, mask, labels = pad_batch(samples[:4], pad_id)
    opt = torch.optim.AdamW(trained.parameters(), lr=1e-2)
    for _ in range(10):
        opt.zero_grad()
        trained(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss.backward()
        opt.step()
    trained.eval()
    d1, s1, _, _, _ = _alignment(trained, samples[:4])
    return {"loss_vs_noshift_CE_max": d0, "loss_vs_shifted_CE_min": s0, "trained: noshift_max": d1,
            "trained: shifted_min": s1, "logits_cover_labels": covers, "initial_loss_mean": init, "ln_V": ln_v}


@torch.no_grad()
def causality(model, samples, vocab):
    """[2] change response tokens from j on: logits at positions <= j must not move (decoder input is shifted
    labels, so position j reads labels < j); later positions must move (control). Also: changing the last prompt
    token moves decoder position 0 (the encoder feeds every decoder position)."""
    g = torch.Generator().manual_seed(0)
    earlier, later, enc = 0.0, 0.0, 0.0
    for p, r in samples:
        if len(r) < 8:
            continue
        j = len(r) // 2
        r2 = list(r)
        for i in range(j, len(r)):
            r2[i] = 3 + (r[i] - 3 + int(torch.randint(1, vocab - 4, (1,), generator=g))) % (vocab - 3)
        a = torch.log_softmax(fwd(model, p, r).logits[0].float(), -1)
        b = torch.log_softmax(fwd(model, p, r2).logits[0].float(), -1)
        earlier = max(earlier, (a[: j + 1] - b[: j + 1]).abs().max().item())
        later = max(later, (a[j + 1:] - b[j + 1:]).abs().max().item())
        p2 = list(p)
        p2[-1] = 3 + (p[-1] - 3 + 17) % (vocab - 3)
        c = torch.log_softmax(fwd(model, p2, r).logits[0].float(), -1)
        enc = max(enc, (a[0] - c[0]).abs().max().item())
    return {"earlier_logp_moved_max": earlier, "later_logp_moved_max(control)": later,
            "pos0_moved_by_last_prompt_token(control)": enc}


@torch.no_grad()
def padding(model, samples, pad_id):
    """[3] right-padded pairs: per-sample loss in the batch vs alone; batch loss vs token-weighted mean."""
    per, tw, mom = 0.0, 0.0, 0.0
    for i in range(0, len(samples) - 1, 2):
        pairs = samples[i:i + 2]
        ids, mask, labels = pad_batch(pairs, pad_id)
        out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        nll = -token_logp(out.logits, labels)
        n = (labels != IGNORE).sum(1)
        for k, (p, r) in enumerate(pairs):
            per = max(per, abs((nll[k].sum() / n[k]).item() - fwd(model, p, r).loss.item()))
        tw = max(tw, abs(out.loss.item() - (nll.sum() / n.sum()).item()))
        mom = max(mom, abs(out.loss.item() - (nll.sum(1) / n).mean().item()))
    return {"per_sample_batch_vs_alone_max": per, "batch_loss_vs_token_weighted_max": tw,
            "batch_loss_vs_mean_of_sample_means_max": mom}


@torch.no_grad()
def grad_accum(model, samples, pad_id):
    """[4] two micro-batches of 2; N = label tokens of both; loss(num_items_in_batch=N) vs sum/N."""
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

    accepts = getattr(model, "accepts_loss_kwargs", None)
    if accepts is None:  # transformers.Trainer's rule (trainer.py:517-523)
        accepts = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in inspect.signature(model.forward).parameters.values())
    shifts = LOSS_MAPPING.get(getattr(model, "loss_type", None)) is ForCausalLMLoss and not model.config.is_encoder_decoder
    micro = [pad_batch(samples[0:2], pad_id), pad_batch(samples[2:4], pad_id)]
    n_items = sum(int((lab != IGNORE).sum()) for _, _, lab in micro)
    total, used, err = 0.0, 0.0, None
    dev_sum, dev_mean = 0.0, 0.0
    for ids, mask, labels in micro:
        plain = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        nll_sum = -token_logp(plain.logits, labels).sum().item()
        total += nll_sum
        try:
            out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False,
                        num_items_in_batch=torch.tensor(n_items))
        except Exception as exc:  # noqa: BLE001
            err = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
            break
        used += out.loss.item()
        dev_sum = max(dev_sum, abs(out.loss.item() - nll_sum / n_items))
        dev_mean = max(dev_mean, abs(out.loss.item() - plain.loss.item()))
    res = {"trainer_model_accepts_loss_kwargs": accepts, "trainer_counts_labels[...,1:]": shifts, "N": n_items}
    if err:
        res["num_items_in_batch"] = err
    else:
        res.update({"per_micro_loss_vs_sum/N_max": dev_sum, "per_micro_loss_vs_plain_mean_max": dev_mean,
                    "accumulated_vs_total/N": abs(used - total / n_items)})
    return res


def region(name: str) -> str:
    if any(k in name for k in ("vision", "image", "projector")):
        return "tower"
    if "decoder" in name:
        return "decoder"
    if "encoder" in name:
        return "encoder"
    return "other"


def lora(model, samples, pad_id):
    """[5] LoRA all-linear r=8 (onboard's LoraConfig, peft_targets.py:123): which adapters get gradients from the
    seq2seq loss; then a short LoRA train step on one batch (loss before -> after 6 AdamW steps, lr 1e-2)."""
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(copy.deepcopy(model), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                          target_modules="all-linear", bias="none"))
    pm.train()
    ids, mask, labels = pad_batch(samples[:4], pad_id)
    loss = pm(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
    loss.backward()
    counts: dict[str, list[int]] = {}
    for name, prm in pm.named_parameters():
        if "lora_B" in name:
            c = counts.setdefault(region(name), [0, 0])
            c[0] += 1
            c[1] += int(prm.grad is not None and prm.grad.abs().sum().item() > 0)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    first = None
    for _ in range(6):
        opt.zero_grad()
        out = pm(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        out.loss.backward()
        opt.step()
        first = out.loss.item() if first is None else first
    with torch.no_grad():
        last = pm(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss.item()
    return {"adapters_with_grad/total": {k: f"{v[1]}/{v[0]}" for k, v in sorted(counts.items())},
            "lora_train_loss_first->last": f"{first:.3f} -> {last:.3f}"}


@torch.no_grad()
def packing(model, samples):
    """[6] two samples in one encoder row and one decoder row (decoder_input_ids = each sample's own shifted
    labels), with position_ids / decoder_position_ids restarting, vs each alone: per-token log-prob leak."""
    prep = model.prepare_decoder_input_ids_from_labels if hasattr(model, "prepare_decoder_input_ids_from_labels") else None
    (p1, r1), (p2, r2) = samples[0], samples[2]

    def dec_in(r):
        if prep is not None:
            return prep(labels=t(r))
        from transformers.models.florence2.modeling_florence2 import shift_tokens_right
        c = model.config.text_config
        return shift_tokens_right(t(r), c.pad_token_id, c.decoder_start_token_id)

    alone = [token_logp(fwd(model, p, r).logits, t(r))[0] for p, r in ((p1, r1), (p2, r2))]
    ids, labels = t(p1 + p2), t(r1 + r2)
    dids = torch.cat([dec_in(r1), dec_in(r2)], dim=1)
    pos = t(list(range(len(p1))) + list(range(len(p2))))
    dpos = t(list(range(len(r1))) + list(range(len(r2))))
    res = {}
    variants = {"concat only": {}, "position_ids": {"position_ids": pos},
                "position_ids+decoder_position_ids": {"position_ids": pos, "decoder_position_ids": dpos}}
    ref = None
    for vname, kw in variants.items():
        try:
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=dids, labels=labels,
                        use_cache=False, **kw)
        except Exception as exc:  # noqa: BLE001
            res[vname] = f"refused: {type(exc).__name__}: {str(exc).splitlines()[0][:70]}"
            continue
        lp = token_logp(out.logits, labels)[0]
        leak1 = (lp[: len(r1)] - alone[0]).abs().max().item()
        leak2 = (lp[len(r1):] - alone[1]).abs().max().item()
        effect = "" if ref is None else f", changed logits vs concat by {(out.logits - ref).abs().max().item():.3g}"
        ref = out.logits if ref is None else ref
        res[vname] = f"leak sample1={leak1:.3g} sample2={leak2:.3g} nats{effect}"
    return res


def fused(model, samples, pad_id):
    """Fused loss: (a) Cut Cross Entropy on the tensor entering the output layer, shift=0 and shift=1, vs the
    model's loss; (b) TRL 1.16's fused LM head (trl/trainer/utils.py add_fused_lm_head), as SFTTrainer calls it."""
    res = {}
    ids, mask, labels = pad_batch(samples[:2], pad_id)
    head = model.get_output_embeddings()
    captured = []
    hook = head.register_forward_hook(lambda m, i, o: captured.append(i[0]))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
    hook.remove()
    own = out.loss.item()
    nll = -token_logp(out.logits[:, :-1], labels[:, 1:])
    shifted = (nll.sum() / (labels[:, 1:] != IGNORE).sum()).item()  # next-token CE of the model's own logits
    try:
        from cut_cross_entropy import linear_cross_entropy

        for s in (0, 1):
            with torch.no_grad():
                cce = linear_cross_entropy(captured[0], head.weight, labels, shift=s, impl="torch_compile").item()
            res[f"CCE shift={s} vs model loss"] = abs(cce - own)
    except ImportError as exc:
        res["CCE"] = f"not installed ({exc})"
    from trl.trainer.utils import add_fused_lm_head

    m = copy.deepcopy(model)
    add_fused_lm_head(m)
    for what, extra in (("labels only (SFTTrainer's batch)", {}),
                        ("+decoder_input_ids from labels", {"decoder_input_ids": _dec_in(model, labels)})):
        try:
            with torch.no_grad():
                out = m(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True, **extra)
            res[f"TRL fused head, {what}"] = (f"loss {out.loss.item():.4f} vs model {own:.4f}, "
                                              f"vs shifted CE {abs(out.loss.item() - shifted):.3g}")
        except Exception as exc:  # noqa: BLE001
            res[f"TRL fused head, {what}"] = f"error {type(exc).__name__}: {str(exc).splitlines()[0][:70]}"
    return res


def _dec_in(model, labels):
    if hasattr(model, "prepare_decoder_input_ids_from_labels"):
        return model.prepare_decoder_input_ids_from_labels(labels=labels)
    from transformers.models.florence2.modeling_florence2 import shift_tokens_right
    c = model.config.text_config
    return shift_tokens_right(labels, c.pad_token_id, c.decoder_start_token_id)


def main():
    import peft
    import transformers
    import trl

    log(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
        f"peft {peft.__version__}; CPU threads {torch.get_num_threads()}; fp32")
    models, sessions, tok = build_models()
    samples = seq2seq_samples(sessions["florence2"], tok)
    pad_id = tok.pad_token_id
    log(f"{len(samples)} samples: prompt {min(len(p) for p, _ in samples)}-{max(len(p) for p, _ in samples)} tokens, "
        f"response {min(len(r) for _, r in samples)}-{max(len(r) for _, r in samples)} tokens (incl. eos); "
        f"vocab {len(tok)}; built in {time.perf_counter() - START:.1f}s")
    for name, m in models.items():
        log(f"  {name}: {type(m).__name__}, {sum(p.numel() for p in m.parameters()):,} params, "
            f"attn {m.config._attn_implementation}")
    detection(models, sessions["llama"].model.eval(), samples)
    probes = [("1 loss alignment", lambda m: loss_alignment(m, samples, pad_id)),
              ("2 decoder causality", lambda m: causality(m, samples, len(tok))),
              ("3 right padding (8 pairs)", lambda m: padding(m, samples, pad_id)),
              ("4 grad accumulation", lambda m: grad_accum(m, samples, pad_id)),
              ("5 LoRA all-linear r=8", lambda m: lora(m, samples, pad_id)),
              ("6 packing one row", lambda m: packing(m, samples)),
              ("7 fused loss", lambda m: fused(m, samples, pad_id))]
    for title, probe in probes:
        log(f"\n[{title}]")
        began = time.perf_counter()
        for name, model in models.items():
            torch.manual_seed(0)
            try:
                res = probe(model)
            except Exception as exc:  # noqa: BLE001
                res = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"}
            log(f"  {name:9s} " + "; ".join(f"{k}={fmt(v)}" for k, v in res.items()))
        log(f"  ({time.perf_counter() - began:.1f}s)")
    log(f"\ntotal {time.perf_counter() - START:.1f}s")


if __name__ == "__main__":
    main()
