"""The checklist on the real embedded GGUF models, and the faults planted in them."""

import json

import pytest

from conftest import by_code, make_session
from onboard.checks import InitialLossCheck, LoadCheck
from onboard.harness.runner import run_checks
from onboard.harness.result import Status, Verdict

pytestmark = pytest.mark.slow


def test_default_model_is_ready_under_the_trainer(smollm2_report):
    """Under the default setup (the HF Trainer turns the cache off) SmolLM2's packed samples see nothing of each
    other and train as alone: READY, no fix."""
    checks = by_code(smollm2_report)
    assert smollm2_report.verdict is Verdict.READY, smollm2_report.reason
    assert checks["LOAD001"].status is Status.PASS
    assert checks["LOAD001"].measurements["class"].value == "LlamaForCausalLM"
    assert checks["LOAD001"].measurements["weights_missing"].value == 0  # every tensor from the checkpoint
    loss = checks["LOSS001"]
    assert loss.status is Status.PASS and 0.5 < loss.measurements["loss"].value < 3.0
    pack = checks["PACK001"]
    assert pack.status is Status.PASS and pack.fix is None, pack.message
    assert pack.measurements["leak_trainer_no_mask"].value == 0  # exactly nothing moves
    assert pack.measurements["harm_trainer_no_mask"].within  # each later sample trains as alone
    assert checks["CCE001"].status is Status.PASS
    assert checks["TRAIN001"].measurements["grad_rel_diff"].within, checks["TRAIN001"].message


def test_default_model_in_a_loop_of_ones_own_leaks_under_the_default_cache():
    """--trainer custom: SmolLM2's default use_cache=True reaches the forward and packed samples see each other
    by whole nats (FM-PACK-CACHE); packing.no_cache_no_mask fixes it."""
    from onboard.checks import LoraCheck, PackingCheck

    # every check on the whole model: the harm in nats is SmolLM2's at its 30 layers (its two-layer slice finds the
    # same leak, a smaller harm: 0.04 nats)
    report = run_checks(make_session("smollm2", trainer="custom", slice="off"), [LoadCheck, LoraCheck, PackingCheck])
    pack = by_code(report)["PACK001"]
    assert pack.diagnosis == "FM-PACK-CACHE" and pack.fix.verified
    assert pack.measurements["leak_no_mask_default_cache"].value > 0.1  # a real leak, in nats
    assert pack.measurements["loss_shift_no_mask_default_cache"].value > 0.1  # and the harm it does to the loss


def test_gguf_conversion_drops_the_quantizer(smollm2_report):
    from onboard.fixtures.models import EMBEDDED, cache_dir

    folder = cache_dir() / "converted" / EMBEDDED["smollm2"].sha256[:16]
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    session = make_session("smollm2")  # loads the cached folder
    assert getattr(session.model, "hf_quantizer", None) is None
    assert session.timings["model_load"] < 20


def test_gemma_tokenizer_is_rebuilt_and_loss_is_pretrained(gemma_session):
    """transformers 5.17 loads the Gemma 3 GGUF tokenizer character by character; onboard rebuilds it."""
    load, loss = run_checks(gemma_session, [LoadCheck, InitialLossCheck]).checks
    assert load.measurements["chars_per_token"].value > 2.5
    assert load.measurements["chat_template"].value.startswith("fallback")
    assert load.status is Status.WARN  # no chat template: a base model
    assert loss.status in (Status.PASS, Status.WARN)
    assert loss.measurements["loss"].value < 3.0 and loss.measurements["loss_content"].value < 3.0


GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user')"
    " + '\n' + m['content'] + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def test_base_model_with_chat_template_reads_as_untrained_template_tokens(gemma_session):
    """FM-LOSS-TEMPLATE: the base model never trained <end_of_turn>; that is not a broken model."""
    from onboard.harness.data import read_chats, tokenize_chat

    chats = read_chats(gemma_session.data_path)
    gemma_session.set_examples([tokenize_chat(gemma_session.tokenizer, c, GEMMA_TEMPLATE, 1024) for c in chats])
    loss = run_checks(gemma_session, [InitialLossCheck]).checks[0]
    assert loss.measurements["loss_template"].value > 3 * loss.measurements["loss_content"].value
    assert loss.status is Status.WARN and loss.diagnosis == "FM-LOSS-TEMPLATE", loss.message
    assert loss.evidence["costliest_template_tokens"][0]["token"] == "<end_of_turn>"
