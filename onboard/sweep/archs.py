"""The architectures a sweep covers: transformers' own auto mappings, so a new release adds its models."""

from __future__ import annotations

CAUSAL_LM = "causal-lm"
IMAGE_TEXT_TO_TEXT = "image-text-to-text"


def architectures() -> dict[str, str]:
    """model_type -> task, sorted; a model type in both mappings counts as causal-lm."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    found = {arch: IMAGE_TEXT_TO_TEXT for arch in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES}
    found.update({arch: CAUSAL_LM for arch in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES})
    return dict(sorted(found.items()))
