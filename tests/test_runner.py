"""The fix loop and the checks' deciding branches on real models: a fix that does not verify is taken back,
a training step that changes nothing is caught, a backend that disagrees with eager attention is caught."""

from conftest import by_code, make_session, run_all
from onboard.checks import AttentionCheck, LoadCheck, LoraCheck
from onboard.harness.result import Status, Verdict
from onboard.harness.runner import run_checks


def test_a_fix_that_does_not_verify_is_taken_back():
    """Bloom leaks across packed samples and cannot take the 4D block mask: the fix fails its re-check, so it is
    reverted, the run is NOT_READY, and the training step runs without it (it crashed with the mask on)."""
    session = make_session("tiny:bloom")
    report = run_all(session)
    pack, train = by_code(report)["PACK001"], by_code(report)["TRAIN001"]
    assert pack.fix is not None and pack.fix.patch_id == "packing.block_mask" and not pack.fix.verified
    assert "packing.block_mask" not in session.applied and "packing.block_mask" not in report.verified_patches
    assert report.verdict is Verdict.NOT_READY and report.exit_code() == 1
    assert train.diagnosis != "FM-TRAIN-STEP", train.message


def test_lora_on_modules_the_loss_never_sees_is_caught():
    """LoRA only on BigBird's pooler, whose output never reaches the loss: no adapter can learn anything."""
    session = make_session("tiny:big_bird", lora_targets=["pooler"])
    lora = by_code(run_checks(session, [LoadCheck, LoraCheck]))["LORA001"]
    assert lora.status is Status.FAIL and lora.diagnosis == "FM-LORA-NOGRAD", lora.message
    assert "no adapter" in lora.message


def _non_causal_attention(module, query, key, value, attention_mask, **kwargs):
    """sdpa that drops the causal mask (a kernel called without causal=True): it runs, and every position
    sees the tokens after it."""
    import torch.nn.functional as F

    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    out = F.scaled_dot_product_attention(query, key, value, is_causal=False, scale=kwargs.get("scaling"))
    return out.transpose(1, 2).contiguous(), None


def test_a_backend_that_disagrees_with_eager_is_a_mismatch():
    """A kernel registered through transformers' attention interface that ignores the causal mask: ATTN001
    compares it with eager attention and reports FM-ATTN-MISMATCH, with no patch."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register("sdpa_non_causal", _non_causal_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register("sdpa_non_causal", sdpa_mask)
    session = make_session("tiny:llama", attn="sdpa_non_causal")
    attn = by_code(run_checks(session, [LoadCheck, AttentionCheck]))["ATTN001"]
    assert attn.status is Status.FAIL and attn.diagnosis == "FM-ATTN-MISMATCH", attn.message
    assert attn.proposed_patch is None and attn.measurements["loss_rel_diff"].value > 1e-3


def test_the_same_kernel_at_the_right_scale_passes():
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register("sdpa_again", sdpa_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register("sdpa_again", sdpa_mask)
    attn = by_code(run_checks(make_session("tiny:llama", attn="sdpa_again"), [LoadCheck, AttentionCheck]))["ATTN001"]
    assert attn.status is Status.PASS, attn.message

