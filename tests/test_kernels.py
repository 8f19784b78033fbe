"""Speed levers (onboard.patches.speed) and KERN001, which verifies each one before training may use it."""

import pytest
import torch
from peft import get_peft_model

from conftest import by_code, make_session, run_all
from onboard.checks import KernelsCheck
from onboard.harness.data import pack
from onboard.harness.forward import PackedBatch, Perturbation
from onboard.harness.result import Status
from onboard.patches import get_patch, ids, unwrap


def _adapted(spec: str, **options):
    session = make_session(spec, **options)
    session.set_adapter(get_peft_model(session.model, session.lora_config()))
    return session


def _packed(session, n: int = 5) -> PackedBatch:
    return PackedBatch.from_rows(pack(session.examples[:n], 4096)[:1], session.device, session.pad_id)


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, labels=batch.labels, use_cache=False)
    out.loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return out.loss.item(), grads


def _same_math_with_the_lever(model, batch, patch=None):
    model.eval()
    with torch.no_grad():  # B != 0: every adapter weight gets a gradient
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=1e-2)
    plain = _loss_and_grads(model, batch)
    with (patch or get_patch(ids.SPEED_PACKED_ATTENTION)).apply(model):
        if patch is None:
            assert unwrap(model).config._attn_implementation == "onboard_packed"
        fast = _loss_and_grads(model, batch)
    assert unwrap(model).config._attn_implementation == "sdpa"
    assert fast[0] == pytest.approx(plain[0], rel=1e-6)
    assert float((fast[1] - plain[1]).norm() / plain[1].norm()) < 1e-5


@pytest.mark.parametrize("spec", ["tiny:llama", "tiny:qwen3"])
def test_packed_attention_gives_the_plain_loss_and_gradients(spec):
    session = _adapted(spec)
    _same_math_with_the_lever(session.train_model, _packed(session))


def test_packed_attention_keeps_a_sliding_window():
    """A window shorter than the samples (Qwen2 with use_sliding_window, every layer windowed at 8 tokens): the
    lever windows each sample as the model's mask does."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from onboard.fixtures.tiny import build_tiny

    model = build_tiny("qwen2", 256, lambda c: AutoModelForCausalLM.from_config(c, attn_implementation="sdpa"),
                       use_sliding_window=True, sliding_window=8, max_window_layers=0)
    model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
    gen = torch.Generator().manual_seed(0)
    ids_ = torch.randint(0, 256, (1, 60), generator=gen)
    batch = PackedBatch(input_ids=ids_, labels=ids_.clone(), sample=torch.zeros_like(ids_),
                        position_ids=torch.cat([torch.arange(25), torch.arange(35)])[None])
    _same_math_with_the_lever(model, batch)


def test_packed_attention_isolates_samples_by_their_positions():
    """The lever's own evidence of being in use: under the default use_cache=True stock sdpa lets packed samples
    see each other (FM-PACK-CACHE); the lever reads the bounds from position_ids and the leak is exactly 0."""
    session = make_session("tiny:llama")
    model = session.model.eval()
    batch = _packed(session, 3)
    vocab = sorted({t for ex in session.examples for t in ex.input_ids})
    assert Perturbation(model, batch, vocab, 0).leak() > 1e-3
    with get_patch(ids.SPEED_PACKED_ATTENTION).apply(model, session):
        assert Perturbation(model, batch, vocab, 0).leak() == 0.0
        with torch.no_grad():  # a padded batch takes the masked path, as sdpa computes it
            padded = model(**session.probe_batch(3), use_cache=False).loss.item()
    with torch.no_grad():
        assert model(**session.probe_batch(3), use_cache=False).loss.item() == pytest.approx(padded, rel=1e-6)


def test_compiled_layers_give_the_plain_loss_and_gradients_and_revert():
    """Regional compilation on the CPU (the lever is CUDA-only in a run; the math is the same here): every decoder
    layer compiled, the same loss and gradients, and no layer left compiled after revert."""
    from onboard.patches.speed import CompiledLayersPatch, repeated_blocks

    session = _adapted("tiny:llama")
    blocks = repeated_blocks(session.train_model)
    assert len(blocks) == session.model.config.num_hidden_layers
    assert type(blocks[0]).__name__ == "LlamaDecoderLayer"
    patch = CompiledLayersPatch(devices=("cpu",))
    _same_math_with_the_lever(session.train_model, _packed(session), patch)
    assert all(b._compiled_call_impl is None for b in blocks)
    assert "cpu" in get_patch(ids.SPEED_COMPILED_LAYERS).applies_to(session.train_model)


def test_kernels_check_verifies_the_lever_for_training():
    report = run_all(make_session("tiny:llama"))
    kern = by_code(report)["KERN001"]
    assert kern.status is Status.PASS, kern.message
    assert kern.enables == [ids.SPEED_PACKED_ATTENTION]  # compiled layers: CUDA only, said so
    assert kern.measurements[ids.SPEED_COMPILED_LAYERS].value == "not applicable"
    assert kern.measurements[f"{ids.SPEED_PACKED_ATTENTION}.grad_rel_diff"].value < 1e-4
    assert ids.SPEED_PACKED_ATTENTION in report.verified_patches


def test_a_lever_that_changes_the_math_is_left_off():
    """Stock Llama 4 passes no position_ids to its attention function: the lever cannot see the samples and
    attends across the row. KERN001 says so (FM-KERN-MATH, WARN) and the lever is not for training."""
    report = run_all(make_session("fault:kern-math"))
    kern = by_code(report)["KERN001"]
    assert kern.status is Status.WARN and kern.diagnosis == "FM-KERN-MATH", kern.message
    assert kern.measurements[f"{ids.SPEED_PACKED_ATTENTION}.grad_rel_diff"].value > 1e-2
    assert ids.SPEED_PACKED_ATTENTION not in report.verified_patches
    assert report.verdict.value != "NOT_READY"


def test_kernels_check_leaves_the_adapter_as_it_found_it():
    session = _adapted("tiny:llama")
    before = {n: p.detach().clone() for n, p in session.train_model.named_parameters() if p.requires_grad}
    KernelsCheck().run(session)
    after = dict(session.train_model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in before.items())
    assert unwrap(session.train_model).config._attn_implementation == "sdpa"


def test_in_bf16_a_lever_is_judged_against_fp32_beside_the_plain_run():
    """bf16 rounding differs between right computations: KERN001 measures the plain run's and the lever's
    distance from the same model in fp32 (weights cast up for one pass and back, bit for bit), and still
    catches a lever that changes the math."""
    from onboard.checks import CHECKS
    from onboard.harness.runner import run_checks

    subset = [c for c in CHECKS if c.code in ("LOAD001", "LORA001", "PACK001", "KERN001")]
    session = make_session("tiny:llama", dtype="bfloat16")
    before = [(p, p.detach().clone()) for p in session.model.parameters()]  # the objects PEFT will wrap
    kern = by_code(run_checks(session, subset))["KERN001"]
    ms = kern.measurements
    assert kern.status is Status.PASS, kern.message
    assert 0 < ms["plain_vs_fp32_grad_rel"].value < ms[f"{ids.SPEED_PACKED_ATTENTION}.vs_fp32_grad_rel"].limit
    # the base weights went to fp32 for one pass and back: bit for bit, every one
    assert all(p.dtype is torch.bfloat16 and torch.equal(p, v) for p, v in before)
    leaky = by_code(run_checks(make_session("fault:kern-math", dtype="bfloat16"), subset))["KERN001"]
    assert leaky.status is Status.WARN and leaky.diagnosis == "FM-KERN-MATH", leaky.message


def test_the_lever_reverts_a_sub_model_that_never_took_sdpa():
    """Apertus 1.5's vision tokenizer refuses sdpa: reverting through set_attn_implementation crashed KERN001
    (the sweep's one INCONCLUSIVE). Each sub-model's own backend is put back as it was."""
    session = make_session("tiny:apertus1p5")
    model = session.train_model
    before = [m.config._attn_implementation for m in unwrap(model).modules() if hasattr(m, "set_attn_implementation")]
    kern = KernelsCheck().run(session)
    assert kern.status is not Status.ERROR, kern.message
    after = [m.config._attn_implementation for m in unwrap(model).modules() if hasattr(m, "set_attn_implementation")]
    assert after == before and "onboard_packed" not in after


def test_a_lever_that_breaks_only_under_checkpointing_is_left_off():
    """fault:kern-ckpt's layers give the attention no position_ids when checkpointed (a layer loop whose checkpointed
    branch passes no **kwargs). The setup checkpoints: KERN001 runs each lever under it. Checkpointing alone gives
    the plain step exactly (fp32: the recompute is the forward); the packed attention gives it without
    checkpointing and attends across the row with it, so it is left off (FM-KERN-CKPT) and training is not blocked."""
    report = run_all(make_session("fault:kern-ckpt"))
    kern = by_code(report)["KERN001"]
    ms = kern.measurements
    assert kern.status is Status.WARN and kern.diagnosis == "FM-KERN-CKPT", kern.message
    assert ms["gradient_checkpointing"].value is True
    assert ms["checkpointing.loss_rel_diff"].value == 0.0 and ms["checkpointing.grad_rel_diff"].value == 0.0
    assert ms[f"{ids.SPEED_PACKED_ATTENTION}.grad_rel_diff"].value > 1e-2  # the samples see each other
    assert ms[f"{ids.SPEED_PACKED_ATTENTION}.without_checkpointing.grad_rel_diff"].value < 1e-5
    assert ids.SPEED_PACKED_ATTENTION not in report.verified_patches
    assert report.verdict.value != "NOT_READY"
    # the same model trained without checkpointing: the lever is its own math, and verified
    plain = by_code(run_all(make_session("fault:kern-ckpt", gradient_checkpointing=False)))["KERN001"]
    assert plain.status is Status.PASS and plain.enables == [ids.SPEED_PACKED_ATTENTION], plain.message


def test_kernels_check_under_checkpointing_leaves_no_checkpointing_behind():
    """Under the setup's checkpointing KERN001 turns it on for its runs and off after: the session's model goes on
    with no checkpointed layer, every module in the mode it was in, and no input-grad hook on its embeddings."""
    session = _adapted("tiny:llama", gradient_checkpointing=True)
    modes = [m.training for m in unwrap(session.train_model).modules()]
    kern = KernelsCheck().run(session)
    assert kern.status is Status.PASS and kern.enables == [ids.SPEED_PACKED_ATTENTION], kern.message
    base = unwrap(session.train_model)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in base.modules())
    assert [m.training for m in base.modules()] == modes
    assert not base.get_input_embeddings()._forward_hooks
