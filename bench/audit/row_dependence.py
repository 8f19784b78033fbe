"""Audit of FM-PACK-ROWINDEX in plain torch + transformers (none of onboard's check code; only its tiny builder, so
each model is the one `tiny:ARCH` builds), fp32, eval mode, `config.use_cache = False`, no attention mask:

1. Llama 4 text: a 200-token random sample alone; the same sample at the end of a row whose other tokens are one
   random filler sample (position_ids restarting at 0 for the sample), rows of 8,000 and 16,384 tokens; and after a
   300-token filler (near the start). Largest |log-softmax difference| against alone.
2. Kosmos-2.5: three samples packed (random ids, 40, 60, 50 tokens, position_ids restarting); the first sample's
   largest |log-softmax difference| against itself alone (it sees no other sample under a causal mask); and the
   sample alone with position_ids 0..39 given (as the packing collator sends a row of one sample) against alone
   without them (the model numbering its positions itself). The same for a control, Llama.

Run: python bench/audit/row_dependence.py [--out bench/audit/row_dependence.md]
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import torch


def build(arch: str):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from onboard.fixtures.tiny import build_tiny, config_for

    torch.manual_seed(0)
    auto = AutoModelForCausalLM if arch in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else AutoModelForImageTextToText

    def make(config):
        cls = auto._model_mapping[type(config)]
        return cls._from_config(config_for(cls, config), dtype=torch.float32)

    model = build_tiny(arch, 512, make).eval()
    model.config.use_cache = False
    return model


@torch.no_grad()
def logprobs(model, ids, positions):
    return model(input_ids=ids, position_ids=positions).logits.float().log_softmax(-1)


def far_end(model, length: int, sample: torch.Tensor, gen) -> float:
    n = sample.shape[1]
    filler = torch.randint(0, 512, (1, length - n), generator=gen)
    row = torch.cat([filler, sample], 1)
    positions = torch.cat([torch.arange(length - n), torch.arange(n)])[None]
    alone = logprobs(model, sample, torch.arange(n)[None])
    return (logprobs(model, row, positions)[:, -n:] - alone).abs().max().item()


def first_sample_shift(model, gen) -> float:
    samples = [torch.randint(0, 512, (1, n), generator=gen) for n in (40, 60, 50)]
    row = torch.cat(samples, 1)
    positions = torch.cat([torch.arange(s.shape[1]) for s in samples])[None]
    alone = logprobs(model, samples[0], torch.arange(40)[None])
    return (logprobs(model, row, positions)[:, :40] - alone).abs().max().item()


@torch.no_grad()
def own_numbering(model, gen) -> float:
    sample = torch.randint(3, 512, (1, 40), generator=gen)
    given = model(input_ids=sample, position_ids=torch.arange(40)[None]).logits.float().log_softmax(-1)
    own = model(input_ids=sample).logits.float().log_softmax(-1)
    return (given - own).abs().max().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/audit/row_dependence.md")
    args = ap.parse_args()
    lines = [f"# FM-PACK-ROWINDEX, reproduced in plain code ({datetime.date.today()}, `bench/audit/row_dependence.py`)",
             "", __doc__.split("\n\n")[1].replace("\n", " "), "", "| model | probe | largest log-prob change | seconds |",
             "|---|---|---|---|"]
    gen = torch.Generator().manual_seed(1)
    llama4 = build("llama4_text")
    sample = torch.randint(0, 512, (1, 200), generator=gen)
    for length in (500, 8000, 16384):
        start = time.time()
        change = far_end(llama4, length, sample, gen)
        lines.append(f"| llama4_text | the sample at the end of a {length}-token row | {change:.3g} | {time.time() - start:.1f} |")
        print(lines[-1], flush=True)
    for arch in ("kosmos-2.5", "llama"):
        start = time.time()
        model = build(arch)
        change = first_sample_shift(model, gen)
        lines.append(f"| {arch} | the first of three packed samples against itself alone | {change:.3g} | "
                     f"{time.time() - start:.1f} |")
        start = time.time()
        lines.append(f"| {arch} | a sample alone, position_ids 0..39 given vs not | {own_numbering(model, gen):.3g} | "
                     f"{time.time() - start:.1f} |")
        print("\n".join(lines[-2:]), flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
