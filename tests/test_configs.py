"""config:NAME / config:PATH sources: released shapes built from a config.json with random weights."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_session
from onboard.harness.errors import BadInput
from onboard.harness.spec import ModelSpec, SourceKind

# parameter counts of the released models (the shipped Qwen3-MoE has 12 of its 48 layers)
RELEASED = {"llama3-8b": (8.02e9, 8.04e9), "qwen2.5-7b": (7.60e9, 7.63e9), "gemma3-4b": (4.29e9, 4.31e9),
            "qwen3-30b-a3b-12l": (8.0e9, 8.2e9), "llama3-70b": (70.5e9, 70.6e9),
            # 8-layer slices of the released hybrids (layer kinds kept): counted on the meta device / an H200
            "qwen3.5-9b-8l": (3.7e9, 3.8e9), "nemotron-h-8b-8l": (2.08e9, 2.09e9)}


def test_every_shipped_config_has_its_shape_tested():
    from onboard.fixtures.models import CONFIGS

    assert {p.stem for p in CONFIGS.glob("*.json")} == set(RELEASED)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_shipped_config_has_the_released_shape(name):
    from transformers import AutoModelForCausalLM

    spec = ModelSpec.parse(f"config:{name}")
    assert spec.kind is SourceKind.CONFIG and spec.random_weights and spec.display == f"config:{name}"
    fields = json.loads(open(spec.target).read())
    fields = {k: v for k, v in fields.items() if not k.startswith("_")}
    from transformers import AutoConfig

    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):  # the shape only: no memory
        model = AutoModelForCausalLM.from_config(config)
    low, high = RELEASED[name]
    assert low < sum(p.numel() for p in model.parameters()) < high


def test_config_path_builds_on_the_device_and_runs_the_checklist(tmp_path):
    from conftest import by_code, run_all

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                "vocab_size": 1024}))
    session = make_session(f"config:{path}")
    assert type(session.model).__name__ == "LlamaForCausalLM" and session.spec.random_weights
    assert all(p.device.type == "cpu" for p in session.model.parameters())
    checks = by_code(run_all(session))
    assert checks["LOSS001"].status.value == "SKIP" and checks["PACK001"].status.value == "PASS"


def test_unknown_config_is_bad_input():
    with pytest.raises(BadInput, match="not a shipped config"):
        ModelSpec.parse("config:llama-9000")
