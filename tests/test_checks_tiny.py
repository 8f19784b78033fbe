"""The checklist on tiny random models of real architectures: structure, not numbers."""

import pytest
import torch

from conftest import by_code, make_session, run_all
from onboard.checks import LoadCheck, LoraCheck
from onboard.checks.base import Check
from onboard.harness.runner import run_checks
from onboard.harness.result import Status, Verdict


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gemma3_text"])
def test_checklist_on_tiny_architectures(arch):
    """Under the default setup (the HF Trainer: no cache in training, a packing collator with no mask) these
    architectures keep packed samples apart and train them as alone: READY, with no fix."""
    report = run_all(make_session(f"tiny:{arch}"))
    checks = by_code(report)
    assert checks["LOAD001"].status is Status.PASS
    assert checks["LORA001"].status is Status.PASS
    assert checks["LORA001"].measurements["adapters_without_gradient"].value == 0
    assert checks["LOSS001"].status is Status.SKIP  # random weights: the loss means nothing
    pack = checks["PACK001"]
    assert pack.status is Status.PASS, pack.message
    assert pack.measurements["leak_trainer_no_mask"].value == 0  # isolated: exactly nothing moves
    assert pack.measurements["harm_trainer_no_mask"].within  # each later sample trains as alone
    assert checks["CCE001"].status is Status.PASS
    assert checks["CCE001"].measurements["logits_produced"].value == 0
    assert checks["TRAIN001"].measurements["grad_rel_diff"].within, checks["TRAIN001"].message
    assert report.verdict is Verdict.READY, report.reason
    # the fused loss and the packed attention KERN001 verified (compiled layers: CUDA only)
    assert report.verified_patches == ["cce.fused_loss", "speed.packed_attention"]


def test_a_loop_of_ones_own_keeps_the_cache_finding():
    """--trainer custom: the model's default use_cache reaches the forward, packed samples see each other
    (FM-PACK-CACHE), and packing.no_cache_no_mask fixes it."""
    report = run_all(make_session("tiny:llama", trainer="custom"))
    pack = by_code(report)["PACK001"]
    assert pack.status is Status.FAIL and pack.diagnosis == "FM-PACK-CACHE"
    assert pack.measurements["leak_no_mask_default_cache"].value > 1e-2  # leaks move log-probs by 0.1-1 nats
    assert pack.measurements["leak_no_mask_no_cache"].value == 0  # isolated: exactly nothing moves
    assert pack.fix.verified and pack.fix.measurements_after["leak_ones_mask_no_cache"].value == 0
    assert report.verdict is Verdict.READY_WITH_FIXES
    assert report.verified_patches == ["packing.no_cache_no_mask", "cce.fused_loss", "speed.packed_attention"]


def test_no_fix_leaves_packing_failing():
    report = run_all(make_session("tiny:llama", trainer="custom"), fix=False)
    assert by_code(report)["PACK001"].fix is None
    assert report.verdict is Verdict.NOT_READY


def test_cache_off_in_config_leaves_only_the_mask_leak():
    session = make_session("tiny:qwen2", trainer="custom")
    session.model.config.use_cache = False
    report = run_all(session, fix=False)
    pack = by_code(report)["PACK001"]
    assert pack.diagnosis == "FM-PACK-MASK"
    assert pack.measurements["leak_no_mask_default_cache"].value == 0


def test_lora_targets_and_coverage():
    session = make_session("tiny:llama", lora_targets=["q_proj", "v_proj"])
    result = run_checks(session, [LoadCheck, LoraCheck]).checks[1]
    assert result.status is Status.PASS
    assert result.measurements["wrapped_attention"].value == 4  # 2 layers x (q, v)
    assert result.measurements["wrapped_mlp"].value == 0
    assert any("not matched by target_modules" in line for line in result.evidence["skipped"])


def test_lora_fails_when_targets_match_nothing():
    session = make_session("tiny:llama", lora_targets=["no_such_proj"])
    report = run_all(session)
    checks = by_code(report)
    assert checks["LORA001"].status is Status.FAIL
    assert checks["PACK001"].status is Status.SKIP and "LORA001" in checks["PACK001"].message
    assert report.verdict is Verdict.NOT_READY


def test_cce_honours_softcapping():
    session = make_session("tiny:gemma2")
    assert session.model.config.final_logit_softcapping
    cce = by_code(run_all(session))["CCE001"]
    assert cce.status is Status.PASS, cce.message


class CrashingCheck(Check):
    code, name, summary = "BOOM001", "boom", "always crashes"

    def run(self, session):
        raise RuntimeError("kaboom")


def test_a_crashing_check_is_an_error_and_the_others_still_run():
    report = run_checks(make_session("tiny:llama"), [LoadCheck, CrashingCheck, LoraCheck])
    load, boom, lora = report.checks
    assert boom.status is Status.ERROR and "kaboom" in boom.message and "traceback" in boom.evidence
    assert load.status is Status.PASS and lora.status is Status.PASS
    assert report.verdict is Verdict.INCONCLUSIVE  # a crash says nothing of the model: no NOT_READY
    assert report.exit_code() == 3


def test_packing_patch_reverts_cleanly():
    from onboard.patches import get_patch

    session = make_session("tiny:llama")
    model = session.model
    ids = torch.tensor([session.examples[0].input_ids + session.examples[1].input_ids])
    pos = torch.tensor([list(range(len(session.examples[0]))) + list(range(len(session.examples[1])))])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = model(input_ids=ids, position_ids=pos).logits
    with get_patch("packing.no_cache_no_mask").apply(model):
        patched = model(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids)).logits
        assert model.config.use_cache is False
    after = model(input_ids=ids, position_ids=pos).logits
    assert not torch.allclose(before, patched, atol=1e-4)  # the patch isolates the samples
    torch.testing.assert_close(before, after)
    assert model.config.use_cache is True
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_cce_patch_reverts_cleanly():
    from onboard.patches import get_patch

    session = make_session("tiny:llama")
    model = session.model
    ids = torch.tensor([session.examples[0].input_ids])
    before = model(input_ids=ids, labels=ids)
    with get_patch("cce.fused_loss").apply(model) as handle:
        fused = model(input_ids=ids, labels=ids)
        assert handle.stats.calls == 1 and fused.logits.numel() == 0
    after = model(input_ids=ids, labels=ids)
    assert "forward" not in model.__dict__
    torch.testing.assert_close(before.logits, after.logits)
    torch.testing.assert_close(fused.loss, before.loss, rtol=1e-4, atol=1e-5)


def test_load_fails_on_a_tokenizer_without_merges():
    """FM-LOAD-TOKENIZER: the fault transformers 5.17 gave the Gemma 3 GGUF tokenizer (BPE, no merges)."""
    import json

    from tokenizers import Tokenizer
    from onboard.harness.data import read_chats, tokenize_chat

    session = make_session("tiny:llama")
    state = json.loads(session.tokenizer.backend_tokenizer.to_str())
    state["model"]["merges"] = []
    session.tokenizer._tokenizer = Tokenizer.from_str(json.dumps(state))
    chats = read_chats(session.data_path)
    session.set_examples([tokenize_chat(session.tokenizer, c, session.chat_template, 1024) for c in chats])
    load = run_checks(session, [LoadCheck]).checks[0]
    assert load.status is Status.FAIL and load.diagnosis == "FM-LOAD-TOKENIZER", load.message


def test_attention_kernel_that_cannot_load_falls_back():
    """FM-ATTN-KERNEL: flash-attn is not installed on the CPU box; the run goes on and the fallback is verified."""
    from onboard.checks import AttentionCheck

    session = make_session("tiny:llama", attn="flash_attention_2")
    assert session.attn_load_error and "FlashAttention2" in session.attn_load_error
    attn = run_checks(session, [LoadCheck, AttentionCheck]).checks[1]
    assert attn.status is Status.FAIL and attn.diagnosis == "FM-ATTN-KERNEL"
    assert attn.fix.verified and session.attn == "sdpa"
    assert attn.fix.measurements_after["loss_rel_diff"].value <= 1e-4


def test_forward_that_fails_with_eager_too_is_not_blamed_on_the_backend():
    """FM-MODEL-FORWARD: a GPT-2 whose 16 learned positions the samples outrun fails with eager too, so ATTN001
    proposes no attention fallback that could never verify; its error names no input text lacks, so it is a
    finding (NOT_READY), not NOT_APPLICABLE."""
    from onboard.checks import AttentionCheck

    report = run_checks(make_session("fault:model-forward"), [LoadCheck, AttentionCheck])
    attn = report.checks[1]
    assert attn.status is Status.FAIL and attn.diagnosis == "FM-MODEL-FORWARD", attn.message
    assert attn.proposed_patch is None and attn.fix is None and "eager" in attn.message
    assert attn.needs is None and report.verdict.value == "NOT_READY"


def test_packing_perturbation_is_exact_in_bf16():
    """The perturbation test needs no noise model: in bf16 an isolated packed sample still moves by exactly
    0 when another sample of its row changes, while the default-cache leak moves it far past the tolerance."""
    from onboard.checks import PackingCheck

    session = make_session("tiny:llama", dtype="bfloat16", trainer="custom")
    pack = by_code(run_checks(session, [LoadCheck, LoraCheck, PackingCheck]))["PACK001"]
    assert pack.measurements["leak_no_mask_no_cache"].value == 0
    assert pack.measurements["leak_no_mask_default_cache"].value > 100 * session.threshold("packing.tolerance")
    assert pack.diagnosis == "FM-PACK-CACHE" and pack.fixed, pack.message
    assert pack.fix.measurements_after["leak_no_mask_default_cache"].value == 0
