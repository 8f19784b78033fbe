"""The fix loop and the checks' deciding branches on real models: a fix that does not verify is taken back,
a training step that changes nothing is caught, a backend that disagrees with eager attention is caught."""

from conftest import by_code, make_session, run_all
from onboard.checks import AttentionCheck, LoadCheck, LoraCheck, TrainStepCheck
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


def test_a_step_that_changes_no_adapter_weight_is_caught():
    """LoRA only on BigBird's pooler, whose output never reaches the loss: LORA001 lets it pass (no adapter is
    broken), and the real training step then changes no weight: FM-TRAIN-NOUPDATE."""
    session = make_session("tiny:big_bird", lora_targets=["pooler"])
    checks = by_code(run_checks(session, [LoadCheck, LoraCheck, TrainStepCheck]))
    assert checks["LORA001"].status is Status.PASS and checks["LORA001"].measurements["adapters_off_loss_path"].value == 1
    train = checks["TRAIN001"]
    assert train.status is Status.FAIL and train.diagnosis == "FM-TRAIN-NOUPDATE", train.message


def _wrong_scale_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """sdpa with the softmax scale doubled: a kernel that runs and is wrong."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=(scaling or 1.0) * 2, **kwargs)


def test_a_backend_that_disagrees_with_eager_is_a_mismatch():
    """A kernel registered through transformers' attention interface that scales its scores wrongly:
    ATTN001 compares it with eager attention and reports FM-ATTN-MISMATCH, with no patch."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register("sdpa_wrong_scale", _wrong_scale_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register("sdpa_wrong_scale", sdpa_mask)
    session = make_session("tiny:llama", attn="sdpa_wrong_scale")
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

