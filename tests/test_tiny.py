"""tiny:ARCH keeps the shrunk config consistent: each architecture here failed to build, or failed its forward,
for reasons of the shrinking (a size left None, sections not scaled, a layer-count field under another name,
a class default that does not build as it ships). Now each builds small and runs a labelled text forward."""

import pytest
import torch

from conftest import make_session
from onboard.fixtures.tiny import TinyBuildError, build_tiny, tiny_config


@pytest.mark.parametrize("arch, what", [
    ("deepseek_v2", "num_experts_per_tok left at its None default"),
    ("hunyuan_v1_dense", "head_dim left None"),
    ("glm4v", "rotary sections (mrope) of the default head size"),
    ("qwen2_vl", "a vision tower whose widths are named embed_dim and depth"),
    ("mpt", "layers counted in n_layers"),
    ("cwm", "a strictly typed bos_token_id outside the small vocabulary"),
    ("lfm2_moe", "a class default with no layer types (checkpoint fields)"),
    ("dbrx", "a class default without rope_theta and clip_qkv (checkpoint fields)"),
    ("xlnet", "a validator tying d_head to d_model // n_head"),
    ("granite4_vision", "a class default with no downsample rate, whose Q-Former takes width // 64 heads"),
    ("longcat_flash", "qk_head_dim = qk_nope_head_dim + qk_rope_head_dim"),
])
def test_architecture_that_failed_to_shrink_builds_and_runs(arch, what):
    session = make_session(f"tiny:{arch}")
    model = session.model
    assert sum(p.numel() for p in model.parameters()) < 200e6, what
    ids = torch.tensor([session.examples[0].input_ids[:24]])
    out = model(input_ids=ids, labels=ids, use_cache=False)
    assert torch.isfinite(out.loss), what


def test_layer_types_keep_one_layer_of_each_kind():
    """Gemma 3 interleaves five sliding layers with one full one: two layers keep both kinds."""
    config = tiny_config("gemma3_text", vocab_size=1024)
    assert config.num_hidden_layers == 2 and set(config.layer_types) == {"sliding_attention", "full_attention"}


def test_an_architecture_that_cannot_be_built_small_says_it_is_onboards_limit():
    """BLT's patcher and byte encoder tie sizes onboard does not shrink together: the error blames onboard,
    lists each way tried, and exits 3 (environment or internal), not 2 or 1."""
    from typer.testing import CliRunner

    from onboard.cli import app

    with pytest.raises(TinyBuildError, match="onboard's limit, not the architecture's fault") as info:
        build_tiny("blt", 1024, lambda config: __import__("transformers").AutoModelForCausalLM.from_config(config))
    assert "widths and layers shrunk" in str(info.value) and "every layer kept" in str(info.value)
    out = CliRunner().invoke(app, ["check", "tiny:blt"])
    assert out.exit_code == 3 and "onboard's limit" in out.output and "Traceback" not in out.output
