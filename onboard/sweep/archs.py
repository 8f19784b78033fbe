"""The architectures a sweep covers: transformers' own auto mappings, so a new release adds its models."""

from __future__ import annotations

CAUSAL_LM = "causal-lm"
IMAGE_TEXT_TO_TEXT = "image-text-to-text"
TEXT_TO_TEXT = "text2text"


def architectures() -> dict[str, str]:
    """model_type -> task, sorted; a model type in several mappings counts as causal-lm, then image-text-to-text;
    text2text: an encoder-decoder in neither (T5, LED, ...), which the checks probe as seq2seq."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    found = {arch: TEXT_TO_TEXT for arch in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES}
    found.update({arch: IMAGE_TEXT_TO_TEXT for arch in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES})
    found.update({arch: CAUSAL_LM for arch in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES})
    return dict(sorted(found.items()))
