"""CCE001 decides on the loss and on the gradients, each on its own: a model whose own loss differs from the
cross-entropy of its logits only in value, and one whose loss has that value but other gradients."""

import torch

from conftest import by_code, make_session
from onboard.checks import CceCheck, LoadCheck, LoraCheck
from onboard.fixtures.faults import _same_signature, _tiny
from onboard.harness.result import Status
from onboard.harness.runner import run_checks


def _with_loss(transform):
    """A tiny Llama whose forward passes its own loss through `transform` (as a model adding a term)."""
    from transformers import LlamaForCausalLM

    class LlamaWithOwnLoss(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            if out.loss is not None:
                out.loss = transform(out.loss)
            return out

    return lambda: _same_signature(LlamaWithOwnLoss, LlamaForCausalLM)


def _cce(model_class):
    session = make_session("tiny:llama")
    session.set_model(_tiny("llama", model_class)(torch.float32, lambda make: make(None), print)[1])
    session.model.eval()
    return by_code(run_checks(session, [LoadCheck, LoraCheck, CceCheck]))["CCE001"]


def test_a_loss_that_differs_only_in_value_is_caught():
    """loss + 0.5, a constant (a detached regulariser): the gradients are the fused loss's, the value is not."""
    cce = _cce(_with_loss(lambda loss: loss + 0.5))
    assert cce.status is Status.FAIL and cce.diagnosis == "FM-CCE-MATH", cce.message
    assert cce.measurements["grad_rel_diff"].value <= 1e-4 < cce.measurements["loss_rel_diff"].value


def test_gradients_that_differ_with_an_equal_loss_are_caught():
    """loss + (loss - loss.detach()): the same value, twice the gradient."""
    cce = _cce(_with_loss(lambda loss: loss + (loss - loss.detach())))
    assert cce.status is Status.FAIL and cce.diagnosis == "FM-CCE-MATH", cce.message
    assert cce.measurements["loss_rel_diff"].value <= 1e-4 < cce.measurements["grad_rel_diff"].value


def test_a_healthy_model_passes_on_both():
    cce = _cce(None)
    assert cce.status is Status.PASS, cce.message
    assert cce.measurements["loss_rel_diff"].value <= 1e-4 and cce.measurements["grad_rel_diff"].value <= 1e-3
