"""LOAD001: the model loads as a trainable causal LM whose tokenizer fits its embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onboard.checks.base import Check
from onboard.harness.data import CONTENT
from onboard.harness.result import Status
from onboard.harness.gguf import CHAR_LEVEL

if TYPE_CHECKING:
    from onboard.harness.session import ModelSession


class LoadCheck(Check):
    """What it does:
    Reports what was loaded: the class (ForCausalLM or ForConditionalGeneration), model_type, parameter
    count, dtype, the attention implementation in use, vocabulary size against embedding rows, whether
    the tokenizer has a chat template, and, for a pretrained checkpoint, the weights that transformers
    reported missing from it (so initialised at random), unused, or of another shape.

    Why it matters:
    A token id at or past the embedding rows crashes on GPU or reads garbage; a quantizer left attached
    by a GGUF load makes the Trainer refuse to train and save_pretrained fail; a missing chat template
    means the data is rendered with onboard's plain fallback template, not the model's own.

    Failure modes:
    FM-LOAD-MISSING (weights the checkpoint lacks, or holds in another shape, that loading initialised at
    random: a missing output head reads later only as a random-level loss), FM-LOAD-TOKENIZER (the tokenizer splits words into single characters: under 1.5 chars per token on
    the assistant text; seen with Gemma 3 GGUF tokenizers loaded by transformers 5.17), FM-LOAD-VOCAB (tokenizer ids beyond the embedding), FM-LOAD-GGUF (quantizer still attached).
    WARN when there is no chat template or when a sample was truncated to --max-length.

    Fix:
    None here: GGUF files are dequantized and cached without their quantizer at load time, and a GGUF
    tokenizer that loads character-level is rebuilt from the file's vocabulary and scores.
    """

    code = "LOAD001"
    runs_on = "whole"
    version = 2  # 2: the setup calls its API requires (X-MOD's language) made and named
    name = "load"
    summary = "model, tokenizer and attention backend load as a trainable causal LM"

    def run(self, session: ModelSession):
        model, tok = session.whole_model, session.tokenizer  # the whole model's (on the meta device where it does not fit)
        config = model.config
        text = config.get_text_config()
        rows = _embedding_rows(model)
        max_id = max(max(ex.input_ids) for ex in session.examples)
        res = self.result(Status.PASS, "")
        res.measure("class", type(model).__name__)
        res.measure("model_type", config.model_type)
        res.measure("parameters", sum(p.numel() for p in model.parameters()), "params")
        res.measure("dtype", str(session.dtype).removeprefix("torch."))
        res.measure("attention", config._attn_implementation)
        res.measure("vocab_size", getattr(text, "vocab_size", None), "tokens")
        res.measure("embedding_rows", rows, "rows")
        res.measure("tokenizer_size", len(tok), "tokens", compare="<=", limit=rows, note="embedding rows")
        res.measure("max_token_id_in_data", max_id, "", compare="<", limit=rows)
        if session.setup_calls:
            res.measure("setup_calls", "; ".join(session.setup_calls), "", "what the model's API requires before a forward")
        res.measure("chat_template", "model" if not session.template_is_fallback else "fallback (none in tokenizer)")
        cpt = _chars_per_token(session)
        if cpt is None:  # every answer masked or truncated away: nothing to judge the tokenizer on (LOSS001's)
            res.measure("chars_per_token", "not judged", "", "no assistant content token in the data")
        else:
            res.measure("chars_per_token", round(cpt, 2), "chars", compare=">=", limit=CHAR_LEVEL)
        truncated = sum(ex.truncated for ex in session.examples)
        res.measure("truncated_samples", truncated, "samples", f"0 at --max-length {session.max_length}")

        info = session.loading_info or {}
        missing, unexpected = info.get("missing_keys", []), info.get("unexpected_keys", [])
        if session.loading_info is not None:
            res.measure("weights_missing", len(missing), "tensors", "0: every weight comes from the checkpoint")
            res.measure("weights_unused", len(unexpected), "tensors", "checkpoint tensors the class does not use")
            res.measure("weights_reshaped", len(info.get("mismatched_keys", [])), "tensors", "0")
            if missing:
                res.evidence["weights_missing"] = _group(missing)
            if unexpected:
                res.evidence["weights_unused"] = _group(unexpected)
        reshaped = info.get("mismatched_keys", [])

        quantizer = getattr(model, "hf_quantizer", None)
        if missing or reshaped:
            names = _group(missing + [str(k) for k in reshaped])
            res.status, res.diagnosis = Status.FAIL, "FM-LOAD-MISSING"
            res.message = (f"{len(missing) + len(reshaped)} weights are not in the checkpoint (or not in its shape) "
                           f"and were initialised at random: {'; '.join(names[:4])}")
        elif quantizer is not None and not getattr(quantizer, "is_trainable", True):
            res.status, res.diagnosis = Status.FAIL, "FM-LOAD-GGUF"
            res.message = f"a {type(quantizer).__name__} is still attached: Trainer will refuse to train"
        elif cpt is not None and cpt < CHAR_LEVEL:
            res.status, res.diagnosis = Status.FAIL, "FM-LOAD-TOKENIZER"
            res.message = (f"the tokenizer splits text into single characters ({cpt:.2f} chars per token): "
                           "its merges were lost, typically in a GGUF conversion")
        elif max_id >= rows or len(tok) > rows:
            res.status, res.diagnosis = Status.FAIL, "FM-LOAD-VOCAB"
            res.message = f"tokenizer has {len(tok)} tokens (data uses id {max_id}) but the embedding has {rows} rows"
        else:
            res.message = (f"{type(model).__name__} ({config.model_type}), "
                           f"{res.measurements['parameters'].value / 1e6:.1f}M params, {config._attn_implementation}")
            notes = []
            if session.template_is_fallback:
                notes.append("no chat template: samples use onboard's plain fallback template")
            if truncated:
                notes.append(f"{truncated} samples truncated to {session.max_length} tokens")
            if session.setup_calls:  # not a finding: the model's API requires it, training makes the same call
                res.message += f"; set up as its API requires: {', '.join(session.setup_calls)}"
            if notes:
                res.status = Status.WARN
                res.message += "; " + "; ".join(notes)
        return res


def _embedding_rows(model) -> int:
    """Rows of the input embedding; a model without one plain embedding (MusicGen's one per codebook, or none
    exposed) is measured by its config's vocabulary instead."""
    try:
        weight = getattr(model.get_input_embeddings(), "weight", None)
    except NotImplementedError:
        weight = None
    if weight is not None:
        return weight.shape[0]
    return int(getattr(model.config.get_text_config(), "vocab_size", 0) or 0)


def _group(names: list[str]) -> list[str]:
    """Tensor names with their layer index folded: 'model.layers.*.mlp.up_proj.weight (30 x)'."""
    import re
    from collections import Counter

    counts = Counter(re.sub(r"\.\d+\.", ".*.", name) for name in names)
    return [f"{name} ({n} x)" if n > 1 else name for name, n in counts.most_common()]


def _chars_per_token(session: ModelSession) -> float | None:
    """Characters per token over the assistant content: about 4 for English with a healthy tokenizer; None
    when no content token is left to measure."""
    chars = tokens = 0
    for ex in session.examples:
        ids = [t for t, k in zip(ex.labels if ex.seq2seq else ex.input_ids, ex.kinds) if k == CONTENT]
        chars += len(session.tokenizer.decode(ids))
        tokens += len(ids)
    return chars / tokens if tokens else None
