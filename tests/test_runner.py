"""The fix loop and the checks' deciding branches on real models: a fix that does not verify is taken back,
a training step that changes nothing is caught, a backend that disagrees with eager attention is caught."""

import torch

from conftest import by_code, make_session, run_all
from onboard.checks import AttentionCheck, LoadCheck, LoraCheck, TrainStepCheck
from onboard.harness.result import Status, Verdict
from onboard.harness.runner import run_checks


def test_a_fix_that_does_not_verify_is_taken_back():
    """Bloom leaks across packed samples and cannot take the 4D block mask: the fix fails its re-check, so it is
    reverted and the training step runs without it (it crashed with the mask on); the fallback, unpacked
    training, is what verifies, and training runs right-padded."""
    session = make_session("tiny:bloom")
    report = run_all(session)
    pack, train = by_code(report)["PACK001"], by_code(report)["TRAIN001"]
    assert pack.fix.tried[0]["patch_id"] == "packing.block_mask"
    assert pack.fix.patch_id == "packing.unpacked" and pack.fix.verified and pack.fix.fallback
    assert "packing.block_mask" not in session.applied and "packing.block_mask" not in report.verified_patches
    assert report.verdict is Verdict.READY_WITH_FIXES and report.exit_code() == 0
    assert train.status is Status.PASS and "right-padded" in train.message, train.message
    from onboard.reports import html, markdown

    page = html.render(report)  # the reports say so too
    assert "<code>packing.block_mask</code> not verified" in page and "packing.block_mask</code> verified" not in page
    assert "`packing.block_mask` tried, not verified" in markdown.render(report)


def test_a_training_path_that_never_calls_the_adapted_layers_is_caught():
    """A train-mode MLP that multiplies by down_proj.weight and never calls the layer: the training loss then
    depends on no adapter at all; TRAIN001 says so (FM-TRAIN-NOUPDATE), not that the step crashed."""
    from onboard.fixtures.faults import _bypass_in_training, _tiny

    session = make_session("tiny:llama", lora_targets=["down_proj"])
    session.set_model(_tiny("llama", lambda: _bypass_in_training(zero_times_layer=False))(torch.float32, lambda make: make(None), print)[1])
    session.model.eval()
    checks = by_code(run_checks(session, [LoadCheck, LoraCheck, TrainStepCheck]))
    assert checks["LORA001"].status is Status.PASS  # in eval mode the layer runs and its adapter learns
    train = checks["TRAIN001"]
    assert train.status is Status.FAIL and train.diagnosis == "FM-TRAIN-NOUPDATE", train.message
    assert "depends on no adapter" in train.message


def test_lora_on_modules_the_loss_never_sees_is_caught():
    """LoRA only on BigBird's pooler, whose output never reaches the loss: no adapter can learn anything."""
    session = make_session("tiny:big_bird", lora_targets=["pooler"])
    lora = by_code(run_checks(session, [LoadCheck, LoraCheck]))["LORA001"]
    assert lora.status is Status.FAIL and lora.diagnosis == "FM-LORA-NOGRAD", lora.message
    assert "no adapter" in lora.message


def _swapped_heads_attention(module, query, key, value, attention_mask, **kwargs):
    """sdpa with the value heads in reverse order (a kernel with a head-layout bug): causal, runs, wrong."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value.flip(1), attention_mask, **kwargs)


def _non_causal_attention(module, query, key, value, attention_mask, **kwargs):
    """sdpa called without its causal mask: every position sees the tokens after it."""
    import torch.nn.functional as F

    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    out = F.scaled_dot_product_attention(query, key, value, is_causal=False, scale=kwargs.get("scaling"))
    return out.transpose(1, 2).contiguous(), None


def _attention_with(name, fn):
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(name, fn)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)
    return by_code(run_checks(make_session("tiny:llama", attn=name), [LoadCheck, AttentionCheck]))["ATTN001"]


def test_a_backend_that_disagrees_with_eager_is_a_mismatch():
    """A kernel registered through transformers' attention interface that swaps heads: ATTN001 compares it
    with eager attention and reports FM-ATTN-MISMATCH, with no patch."""
    attn = _attention_with("sdpa_swapped_heads", _swapped_heads_attention)
    assert attn.status is Status.FAIL and attn.diagnosis == "FM-ATTN-MISMATCH", attn.message
    assert attn.proposed_patch is None and attn.measurements["loss_rel_diff"].value > 1e-4


def test_a_backend_that_ignores_the_causal_mask_is_not_causal():
    """The same interface, a kernel without its causal mask: the earlier predictions move when later tokens
    change, an exact-0 test, whatever the loss says."""
    attn = _attention_with("sdpa_non_causal", _non_causal_attention)
    assert attn.status is Status.FAIL and attn.diagnosis == "FM-ATTN-NONCAUSAL", attn.message
    assert attn.measurements["future_leak"].value > 1e-3
    assert not attn.fixed  # is_decoder cannot make a custom kernel causal: the fix is tried and taken back


def test_the_same_interface_with_a_correct_kernel_passes():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    attn = _attention_with("sdpa_again", sdpa_attention_forward)
    assert attn.status is Status.PASS, attn.message
    assert attn.measurements["future_leak"].value == 0


def test_head_dim_at_the_flash_limit_is_no_head_size_finding():
    """flash-attn kernels take head_dim up to 256 inclusive: a head of 256 is not FM-ATTN-HEADDIM. On this CPU
    box the kernel is not installed, which is the finding (FM-ATTN-KERNEL), fixed by the fallback."""
    from onboard.fixtures.faults import _tiny

    session = make_session("tiny:gemma3_text", attn="flash_attention_2")
    session.set_model(_tiny("gemma3_text", head_dim=256)(torch.float32, lambda make: make("sdpa"), print)[1])
    session.model.eval()
    attn = by_code(run_checks(session, [LoadCheck, AttentionCheck]))["ATTN001"]
    assert attn.measurements["head_dim"].value == "256"
    assert attn.diagnosis == "FM-ATTN-KERNEL" and attn.fixed, attn.message


def _gradient_scaled_by_steps():
    """A forward that takes **kwargs and normalises its loss value by num_items_in_batch, but whose gradient
    is each micro-batch's own mean: GA gives the right loss and k times the gradient."""
    from transformers import LlamaForCausalLM

    from onboard.fixtures.faults import _same_signature

    class LlamaWithMeanGradient(LlamaForCausalLM):
        def forward(self, *args, labels=None, num_items_in_batch=None, **kwargs):
            out = super().forward(*args, labels=labels, **kwargs)
            if labels is not None and num_items_in_batch is not None:
                mean = out.loss
                count = (labels[:, 1:] != -100).sum()
                value = mean * count / num_items_in_batch
                out.loss = value.detach() + (mean - mean.detach())
            return out

    return _same_signature(LlamaWithMeanGradient, LlamaForCausalLM)


def test_accumulation_that_keeps_the_loss_but_not_the_gradients_is_caught():
    from onboard.checks import GradAccumCheck
    from onboard.fixtures.faults import _tiny

    session = make_session("tiny:llama")
    session.set_model(_tiny("llama", _gradient_scaled_by_steps)(torch.float32, lambda make: make(None), print)[1])
    session.model.eval()
    ga = by_code(run_checks(session, [LoadCheck, LoraCheck, GradAccumCheck]))["GA001"]
    assert ga.measurements["loss_rel_diff"].value <= 1e-4, ga.message
    assert ga.status is Status.FAIL and ga.measurements["grad_rel_diff"].value > 1e-3, ga.message


def test_a_fix_after_which_the_same_warning_stays_is_not_verified():
    """The fix loop on a real model and a real patch, for a WARN: a warning that is still there, with the same
    failure mode, after the patch means the patch did not fix it."""
    from onboard.checks.base import Check, FixAvailability

    class AlwaysWarns(Check):
        code, name, summary = "WARN001", "warns", "warns whatever the patch does"
        fix_availability = FixAvailability.SOMETIMES

        def run(self, session):
            return self.result(Status.WARN, "still here", diagnosis="FM-TEST-WARN",
                               proposed_patch="loss.num_items_in_batch")

    session = make_session("tiny:llama")
    result = run_checks(session, [LoadCheck, AlwaysWarns]).checks[1]
    assert result.fix is not None and result.fix.applied and not result.fix.verified
    assert "loss.num_items_in_batch" not in session.applied  # taken back
