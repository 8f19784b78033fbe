"""GGUF to a trainable checkpoint: dequantize fully, drop the quantizer, repair the tokenizer where its
conversion tokenizes character by character, and cache the converted folder so the next run loads in seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from onboard.harness.errors import BadInput
from onboard.harness.cache import cache_dir
from onboard.harness.sources import embedded_models


def converted_folder(gguf: Path, progress: Callable[[str], None] = lambda _: None) -> Path:
    """A local .gguf file converted once into onboard's cache (keyed by size and modification time)."""
    st = gguf.stat()
    folder = cache_dir() / "converted" / f"{gguf.stem}-{st.st_size}-{st.st_mtime_ns}"
    if not (folder / "onboard-source.json").exists():
        progress(f"Converting {gguf.name} to a plain checkpoint (once; later runs load the cached copy)")
        convert_gguf(gguf, folder)
    return folder


def embedded_folder(name: str, progress: Callable[[str], None] = lambda _: None) -> Path:
    """The embedded model `name` dequantized once into a plain HF folder in onboard's cache (FM-LOAD-GGUF)."""
    embedded = embedded_models()[name]
    folder = cache_dir() / "converted" / embedded.sha256[:16]
    if not (folder / "onboard-source.json").exists():
        gguf = embedded.path(progress)
        progress(f"Converting {gguf.name} to a plain checkpoint (once; later runs load the cached copy)")
        convert_gguf(gguf, folder)
    return folder


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantize a GGUF fully and save it without the quantizer, so it is trainable and saveable."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = folder.with_name(folder.name + ".partial")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as exc:
        raise BadInput(f"cannot load GGUF {gguf.name}: {exc}") from exc
    model.hf_quantizer = None  # a GGUF load keeps its quantizer, which blocks Trainer and save_pretrained
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    # the tokenizer must survive the round trip through its saved class, which is what later runs load
    repaired = chars_per_token(AutoTokenizer.from_pretrained(tmp), _PROBE) < CHAR_LEVEL
    if repaired:
        _rebuild_gguf_tokenizer(gguf, tokenizer).save_pretrained(tmp)
    (tmp / "onboard-source.json").write_text(json.dumps({"gguf": str(gguf), "tokenizer_rebuilt": repaired}))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.replace(folder)


_PROBE = "The quick brown fox jumps over the lazy dog, and then it runs back home again."
CHAR_LEVEL = 1.5  # chars per token below this: the tokenizer splits words into single characters


def chars_per_token(tokenizer, text: str) -> float:
    return len(text) / max(1, len(tokenizer(text, add_special_tokens=False)["input_ids"]))


def _rebuild_gguf_tokenizer(gguf: Path, broken):
    """Some GGUF tokenizers (SentencePiece BPE, e.g. Gemma 3) load into a BPE class without merges and
    tokenize character by character. Rebuild BPE merges from the GGUF vocabulary's scores (a piece merges
    from two pieces of the vocabulary, higher score first), and keep control tokens whole."""
    from tokenizers import AddedToken, models
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.ggml import convert_gguf_tokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    info = load_gguf_checkpoint(str(gguf), return_tensors=False)
    backend, _ = convert_gguf_tokenizer(info["config"]["model_type"], info["tokenizer"])
    pieces = json.loads(backend.to_str())["model"]["vocab"]  # [[piece, score], ...] in id order
    vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
    merges = sorted(
        (-score, vocab[piece[:i]], vocab[piece[i:]], piece[:i], piece[i:])
        for piece, score in pieces for i in range(1, len(piece))
        if piece[:i] in vocab and piece[i:] in vocab
    )
    backend.model = models.BPE(vocab=vocab, merges=[(a, b) for *_, a, b in merges], byte_fallback=True, fuse_unk=True)
    kinds = info["tokenizer"].get("token_type", [])
    control = [AddedToken(pieces[i][0], special=True, normalized=False) for i, k in enumerate(kinds) if k in (3, 4)]
    backend.add_special_tokens(control)
    specials = {k: getattr(broken, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")
                if getattr(broken, k, None)}
    rebuilt = PreTrainedTokenizerFast(tokenizer_object=backend, **specials)
    rebuilt.chat_template = broken.chat_template
    return rebuilt
