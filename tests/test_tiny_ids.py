"""tiny:ARCH gives the model's special ids (pad, bos, eos, decoder start, unk, mask, placeholders) the tiny
tokenizer's where it has the token, else ids the probe data never holds: an ordinary token of the probes taken
for a special one changes what the checks measure (XLM masks every token equal to its pad_index). And sizes
tied to the position count follow the tiny one (Reformer's axial_pos_shape)."""

import re
from math import prod

import pytest
import torch

from conftest import make_session
from onboard.fixtures.tiny import SPECIAL_IDS, UNUSED_IDS, tiny_config
from onboard.harness.sources import tiny_tokenizer


@pytest.fixture(scope="module")
def xlm():
    return make_session("tiny:xlm")


@pytest.fixture(scope="module")
def probe_ids(xlm):
    """Every id the probe data holds: the built-in chats through the chat template, as the checks read them."""
    return {t for ex in xlm.examples for t in ex.input_ids}


# fields holding ids of the text vocabulary, by role; other vocabularies (codebooks, codecs, speech units) aside
_SPECIAL = re.compile(r"^(?!codebook_|codec_|tts_codec_|t2u_|audio_stream_|blank)(?P<role>.+?)(_token_ids?|_token_index)$"
                      r"|^(?P<plain>pad|bos|eos|unk|mask|sep|cls)_index$")


def _special_fields(fields: dict, path: str = ""):
    """(field, role, ids) of the text model's special-id fields, through text sub-configs (towers aside)."""
    for key, value in fields.items():
        if isinstance(value, dict):
            if not any(t in key for t in ("vision", "audio")):
                yield from _special_fields(value, f"{path}{key}.")
            continue
        match = _SPECIAL.match(key) if isinstance(key, str) else None
        if match and value is not None and not isinstance(value, bool):
            ids = value if isinstance(value, (list, tuple)) else [value]
            yield f"{path}{key}", match.group("role") or match.group("plain"), [v for v in ids if isinstance(v, int)]


def test_the_tiny_tokenizers_special_ids_are_those_tiny_configs_use(probe_ids):
    """pad and eos are the tokenizer's; it has no bos, so bos and the other special ids go to byte tokens of
    control bytes, which the probe data never holds; the chat template's <|im_start|> and <|im_end|> it does."""
    tok = tiny_tokenizer()
    assert tok.pad_token_id == SPECIAL_IDS["pad_token_id"] == 0
    assert tok.eos_token_id == SPECIAL_IDS["eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.bos_token_id is None
    assert {tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")} <= probe_ids
    assert tok.pad_token_id not in probe_ids  # padding only, never content
    reserved = [SPECIAL_IDS["bos_token_id"], *UNUSED_IDS]
    assert len(set(reserved)) == len(reserved) and max(reserved) < len(tok)
    assert not set(reserved) & probe_ids
    for i in reserved:  # one control byte each (not tab, newline or return): no text holds them
        text = tok.decode([i])
        assert len(text) == 1 and ord(text) < 0x20 and text not in "\t\n\r", (i, text)


def test_tiny_xlm_pads_with_the_tokenizers_pad_not_with_im_end(xlm, probe_ids):
    """XLM's default pad_index is 2, the tiny tokenizer's <|im_end|>: XLM counts the tokens that are not its pad
    as the sample's length and masks the rest, so every turn end cut a token off the end of each sample."""
    tok, config = xlm.tokenizer, xlm.model.config
    assert config.pad_index == config.pad_token_id == tok.pad_token_id
    assert config.eos_index == tok.eos_token_id
    for key in ("bos_index", "unk_index", "mask_index", "mask_token_id"):
        assert getattr(config, key) not in probe_ids, key
    ids = torch.tensor([xlm.examples[0].input_ids])
    assert (ids == tok.convert_tokens_to_ids("<|im_end|>")).any()
    model = xlm.model.eval()
    with torch.no_grad():
        no_mask = model(input_ids=ids, use_cache=False).logits  # what a packing collator with no mask gives
        ones = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
    assert torch.equal(no_mask, ones)


@pytest.mark.parametrize("arch", ["xlm", "flaubert", "bart", "xlm-roberta", "roberta", "t5", "gemma3", "t5gemma2",
                                  "florence2", "whisper", "aria", "cosmos3_edge", "hunyuan_v1_dense",
                                  "qwen2_5_omni_thinker", "llama", "gpt2", "qwen2_vl", "reformer"])
def test_no_special_id_of_a_tiny_config_is_an_ordinary_token_of_the_probes(arch, probe_ids):
    """A special id the probe data holds is the tokenizer's same special token (pad, eos), or none at all:
    these defaults had pad 1 or 2 (<|im_start|>, <|im_end|>), eos 1, bos 2, placeholders and unk at 3-21."""
    tok = tiny_tokenizer()
    fields = list(_special_fields(tiny_config(arch, len(tok)).to_dict()))
    assert fields
    for key, role, ids in fields:
        if role == "pad":
            assert ids == [tok.pad_token_id], key
        elif role in ("eos", "forced_eos"):
            assert ids == [tok.eos_token_id], key
        else:
            assert not set(ids) & probe_ids, (key, ids)


def test_tiny_chameleons_image_tokens_are_no_ordinary_tokens_of_the_probes(probe_ids):
    """ChameleonForConditionalGeneration sets the logits of its image tokens (vocabulary_map's IMGIMG ids) to
    -inf: on an ordinary token of the probes a label would cost an infinite loss."""
    config = tiny_config("chameleon", len(tiny_tokenizer()))
    assert config.vocabulary_map and not set(config.vocabulary_map.values()) & probe_ids


@pytest.mark.parametrize("positions", [None, 512])
def test_tiny_reformers_axial_shape_multiplies_to_its_positions(positions):
    overrides = {} if positions is None else {"max_position_embeddings": positions}
    config = tiny_config("reformer", 1024, **overrides)
    assert len(config.axial_pos_shape) == 2
    assert prod(config.axial_pos_shape) == config.max_position_embeddings == (positions or 2048)


def test_tiny_reformer_trains_on_its_full_length_only():
    """In training Reformer takes exactly prod(axial_pos_shape) tokens: the tiny one trains on its 2048 positions
    (with the default's (64, 64) it trained on no length: 4096 is past its positions); a probe's 28 do not fit."""
    from transformers import ReformerModelWithLMHead

    config = tiny_config("reformer", 1024)
    model = ReformerModelWithLMHead(config).train()
    ids = torch.randint(3, 1024, (1, config.max_position_embeddings), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(model(input_ids=ids, labels=ids).loss)
    with pytest.raises(ValueError, match="axial_pos_shape"):
        model(input_ids=ids[:, :28], labels=ids[:, :28])
