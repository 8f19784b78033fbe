"""Verdicts pinned on the models that showed each kind of false alarm in the audit of the support matrix, and
on the true findings next to them: a check that falls back to reading config names, or stops measuring the
model's behaviour, fails here."""

import math

import pytest

from conftest import by_code, make_session
from onboard.checks import CceCheck, LoadCheck, LoraCheck, PackingCheck, TrainStepCheck
from onboard.harness.runner import run_checks
from onboard.harness.result import Status


def run(model, checks, fix=True, **kwargs):
    return by_code(run_checks(make_session(model, **kwargs), [LoadCheck, LoraCheck, *checks], fix=fix))


# ---- CCE001: ground truth is what enters the output layer and what comes out ------------------------

@pytest.mark.parametrize("arch, scale, softcap", [
    ("aya_vision", 1.0, "none"),  # its text config says logit_scale 0.0625; the class applies none
    ("cohere", 0.0625, "none"),  # the same field, applied by this class
    ("bert", 1.0, "none"),  # dense + LayerNorm inside the head, before the output layer
    ("gemma2", 1.0, 30.0),  # final_logit_softcapping, confirmed by the fit
])
def test_fused_loss_follows_the_model_not_its_config_names(arch, scale, softcap):
    cce = run(f"tiny:{arch}", [CceCheck])["CCE001"]
    assert cce.status is Status.PASS, cce.message
    assert cce.measurements["logit_scale"].value == pytest.approx(scale, rel=1e-4)
    assert cce.measurements["logit_softcap"].value == softcap
    assert cce.measurements["loss_rel_diff"].value <= 1e-4


def test_a_scale_under_an_unknown_config_name_is_measured():
    """Logits x 4 by a multiplier no config field names (FalconH1's lm_head_multiplier): the fused loss
    measures the scale and matches; reading config names missed it."""
    import torch

    from onboard.fixtures.faults import _logit_multiplier, _tiny

    session = make_session("tiny:llama")
    _, model = _tiny("llama", _logit_multiplier)(torch.float32, lambda make: make(None), print)
    session.set_model(model)
    cce = by_code(run_checks(session, [LoadCheck, LoraCheck, CceCheck]))["CCE001"]
    assert cce.status is Status.PASS, cce.message
    assert cce.measurements["logit_scale"].value == pytest.approx(4.0, rel=1e-5)


def test_bart_loss_that_does_not_shift_labels_is_a_true_finding():
    cce = run("tiny:bart", [CceCheck])["CCE001"]
    assert cce.status is Status.FAIL and cce.diagnosis == "FM-CCE-MATH"
    assert "does not shift labels" in cce.message, cce.message


# ---- TRAIN001: dropout found by behaviour --------------------------------------------------------------

def test_dropout_under_any_config_name_is_compared_with_dropout_off():
    """CTRL names its dropout resid_pdrop / embd_pdrop: found as a train-mode forward that differs between
    two seeds, and the packed step's loss is compared in eval mode instead of flagged."""
    train = run("tiny:ctrl", [PackingCheck, TrainStepCheck])["TRAIN001"]
    assert train.measurements["stochastic_in_train_mode"].value is True
    assert train.status is Status.PASS, train.message
    assert train.measurements["loss_rel_diff"].value <= 1e-4


def test_a_deterministic_model_compares_the_real_step_loss():
    train = run("tiny:llama", [PackingCheck, TrainStepCheck])["TRAIN001"]
    assert train.measurements["stochastic_in_train_mode"].value is False
    assert train.measurements["train_loss"].value == pytest.approx(train.measurements["loss_reference"].value, rel=1e-4)


# ---- LORA001: an adapter is on the loss path only if the loss depends on its output -------------------

def test_a_pooler_whose_output_never_reaches_the_loss_is_no_finding():
    lora = run("tiny:big_bird", [])["LORA001"]
    assert lora.status is Status.PASS, lora.message
    assert lora.measurements["adapters_off_loss_path"].value == 1
    assert "bert.pooler" in " ".join(lora.evidence["off_loss_path"])


@pytest.mark.parametrize("arch", ["doge", "xlstm"])
def test_a_gradient_blocked_by_random_init_is_no_finding(arch):
    """Doge's zero-initialised dt path and xLSTM's zero-initialised up projection give some adapters no
    gradient on random weights only: reported as evidence of the init, not as a fault of the architecture."""
    lora = run(f"tiny:{arch}", [])["LORA001"]
    assert lora.status is Status.PASS, lora.message
    assert lora.evidence["blocked_by_random_init"]


# ---- PACK001: the perturbation test ---------------------------------------------------------------------

def test_a_true_leak_is_fixed_by_the_block_mask():
    """OPT builds its causal mask without position_ids: the samples leak even with no mask and no cache,
    and an explicit block-diagonal mask isolates them exactly."""
    pack = run("tiny:opt", [PackingCheck])["PACK001"]
    assert pack.diagnosis == "FM-PACK-ISOLATION" and pack.measurements["leak_no_mask_no_cache"].value > 1e-2
    assert pack.proposed_patch == "packing.block_mask" and pack.fixed
    assert pack.fix.patch_id == "packing.block_mask" and not pack.fix.fallback, pack.fix.tried  # not unpacked
    assert all(m.value == 0 for k, m in pack.fix.measurements_after.items() if k.startswith("leak_"))


def test_a_leak_no_mask_can_close_trains_unpacked():
    """Bloom's ALiBi positions come from a 2D mask it builds itself: a leak the loss test missed (8e-3 nats of
    log-probability on tiny weights); the 4D block mask cannot be given to it and sample boundaries do not reach
    its attention, so neither fix verifies. Right-padded batches train each sample as alone: the fallback
    packing.unpacked is verified, with its padding cost (READY_WITH_FIXES, not NOT_READY)."""
    pack = run("tiny:bloom", [PackingCheck], trainer="custom")["PACK001"]
    assert pack.diagnosis == "FM-PACK-ISOLATION", pack.message
    assert [t["patch_id"] for t in pack.fix.tried] == ["packing.block_mask", "packing.sample_boundaries",
                                                       "packing.segment_conv"]
    assert pack.fix.patch_id == "packing.unpacked" and pack.fix.verified and pack.fix.fallback
    after = pack.fix.measurements_after
    assert after["leak_padded"].value == 0 and after["harm_padded"].within
    assert 0 < after["padding_fraction"].value < 1 and "padding" in pack.fix.cost
    # every convention runs: the control's two rows get a mask of two rows (one built for the single row
    # made Bloom's ALiBi index out of range, and the convention read "not applicable")
    assert "not_applicable" not in pack.evidence, pack.evidence.get("not_applicable")
    assert pack.measurements["leak_ones_mask_no_cache"].value > 1e-3


def test_a_hybrid_cache_makes_one_convention_not_applicable_not_a_crash():
    """Bamba's cache cannot take a packed row in eval mode (a loop of one's own that keeps the cache): that
    convention is reported as not applicable, and the others still find the Mamba state carried across samples
    (a true leak)."""
    pack = run("tiny:bamba", [PackingCheck], trainer="custom")["PACK001"]
    assert pack.status is Status.FAIL and pack.diagnosis == "FM-PACK-ISOLATION", pack.message
    assert pack.measurements["leak_no_mask_default_cache"].value == "not applicable"
    assert "no_mask_default_cache" in pack.evidence["not_applicable"]
    assert pack.measurements["leak_no_mask_no_cache"].value > 1e-2


def test_a_hybrid_falls_back_to_unpacked_naming_the_kernels_it_needs():
    """Qwen3.5's GatedDeltaNet and short convolution carry state across a packed row. The block mask cannot
    reach them; sample boundaries can, with causal-conv1d and flash-linear-attention on CUDA, and the torch
    fallback refuses them here naming the package; right padding is exact: READY_WITH_FIXES, unpacked."""
    pack = run("tiny:qwen3_5", [PackingCheck])["PACK001"]
    assert pack.diagnosis == "FM-PACK-ISOLATION" and pack.measurements["leak_trainer_no_mask"].value > 1e-2
    tried = {t["patch_id"]: t["why_not"] for t in pack.fix.tried}
    assert "causal_conv1d" in tried["packing.sample_boundaries"], tried
    assert pack.fix.patch_id == "packing.unpacked" and pack.fix.verified


def test_isolated_samples_positioned_over_the_row_are_not_a_verified_block_mask():
    """Bart's decoder positions every token by its place in the row (learned positions, position_ids not
    taken): the block mask isolates the samples (leak exactly 0) but a later sample's loss is not its loss
    alone (FM-PACK-POSITIONS on the re-check), so the block mask is not verified and training falls back."""
    pack = run("tiny:bart", [PackingCheck])["PACK001"]
    tried = {t["patch_id"]: t["why_not"] for t in pack.fix.tried}
    assert "positions run over the row" in tried["packing.block_mask"], tried
    assert pack.fix.patch_id == "packing.unpacked" and pack.fix.verified


def test_a_healthy_moe_is_isolated_exactly():
    """Routing couples the tokens of a batch only numerically, if at all: isolation is exact on the CPU."""
    pack = run("tiny:mixtral", [PackingCheck])["PACK001"]
    assert pack.status is Status.PASS and pack.fix is None, pack.message
    assert pack.measurements["leak_trainer_no_mask"].value == 0
    assert pack.measurements["control_trainer_no_mask"].value == 0


def test_a_bidirectional_model_leaks_both_ways_across_packed_samples():
    """MegatronBERT from its default config attends both ways. The control is the row again in the same batch
    (rows never attend to each other), so its backward leak cannot pass for noise: taken from the earlier
    samples of the row, the control read 0.0102 nats and hid a 0.0108-nat leak."""
    checks = run("tiny:megatron-bert", [PackingCheck], fix=False)
    pack = checks["PACK001"]
    assert pack.diagnosis == "FM-PACK-ISOLATION" and pack.measurements["leak_no_mask_no_cache"].value > 1e-3
    assert pack.measurements["control_no_mask_no_cache"].value == 0


def test_ln_vocab_comes_from_the_logits_when_the_output_layer_is_not_exposed():
    """Nemotron-H Omni's get_output_embeddings() is None: LOSS001 crashed reading the vocabulary off it. The
    loss of a uniform guess is ln of the logits' width, which a forward gives for every model."""
    from onboard.checks import AttentionCheck, InitialLossCheck

    session = make_session("tiny:nemotron_h_omni")
    assert session.model.get_output_embeddings() is None
    loss = by_code(run_checks(session, [LoadCheck, AttentionCheck, InitialLossCheck]))["LOSS001"]
    assert loss.status is Status.SKIP, loss.message
    assert loss.measurements["ln_vocab"].value == pytest.approx(math.log(len(session.tokenizer)), abs=0.2)


def test_a_forward_that_returns_no_loss_is_named_as_such():
    """DiffusionGemma, given labels, returns no loss: the Trainer has nothing to train on. ATTN001 says so,
    rather than crashing on the missing loss's backward (which read as a backend failure); since issue 26 that is
    the probe not fitting the model (a block-diffusion objective), NOT_APPLICABLE, not a finding."""
    from onboard.checks import AttentionCheck

    report = run_checks(make_session("tiny:diffusion_gemma"), [LoadCheck, AttentionCheck])
    attn = by_code(report)["ATTN001"]
    assert attn.status is Status.SKIP and attn.diagnosis is None, attn.message
    assert "returns no loss" in attn.needs and report.verdict.value == "NOT_APPLICABLE"


def test_a_text_model_left_bidirectional_by_its_config_is_made_causal():
    """PaliGemma's config sets its Gemma text model's use_bidirectional_attention (the prefix-LM it was
    pretrained as): eager builds a causal mask anyway, sdpa without one attends both ways. ATTN001 finds it
    on the training backend and attention.causal fixes it, leaving the vision tower bidirectional."""
    from onboard.checks import AttentionCheck

    session = make_session("tiny:paligemma")
    attn = by_code(run_checks(session, [LoadCheck, AttentionCheck]))["ATTN001"]
    assert attn.diagnosis == "FM-ATTN-NONCAUSAL" and attn.measurements["future_leak"].value > 1e-3, attn.message
    assert attn.fixed and attn.fix.measurements_after["future_leak"].value == 0
    tower = [m.is_causal for n, m in session.model.named_modules() if "vision_tower" in n and hasattr(m, "is_causal")]
    assert tower and not any(tower)


def test_a_target_name_that_also_names_a_layer_is_left_out_by_full_name():
    """Qwen3-Omni's thinker has Linears inside nn.Sequential (leaf name "0"); all-linear then also names layer 0
    of its audio encoder, and PEFT refuses that layer. LORA001 names it FM-LORA-UNSUPPORTED and leaving it out
    by its full name (not "0", which would drop the Linears too) verifies."""
    from peft.tuners.lora import LoraLayer

    session = make_session("tiny:qwen3_omni_moe_thinker")
    lora = by_code(run_checks(session, [LoadCheck, LoraCheck]))["LORA001"]
    assert lora.diagnosis == "FM-LORA-UNSUPPORTED" and lora.fixed, lora.message
    assert any("also names this" in line for line in lora.evidence["unsupported_modules"]), lora.evidence
    # the Linears named "0" are still adapted: only the encoder layers were left out
    kept = [n for n, m in session.peft_model.named_modules() if isinstance(m, LoraLayer) and n.endswith(".0")]
    assert kept, "the Linears sharing the leaf name were left out too"


def test_the_forward_probe_runs_in_train_mode_as_training_does():
    """Reformer's reversible layers refuse a backward in eval mode: probing so blamed the model for onboard's
    setup. In train mode its real requirement shows: every training row must be exactly prod(axial_pos_shape)
    tokens long (its config field, which its error names), which onboard's variable-length probes are not. That is
    the probe not fitting the model: NOT_APPLICABLE, with the model's own words, never FM-MODEL-FORWARD."""
    from onboard.checks import AttentionCheck

    report = run_checks(make_session("tiny:reformer"), [LoadCheck, AttentionCheck])
    attn = by_code(report)["ATTN001"]
    assert attn.status is Status.SKIP and attn.diagnosis is None, attn.message
    assert "axial_pos_shape" in attn.needs and "padding your sequence length to 2048" in attn.needs, attn.needs
    assert report.verdict.value == "NOT_APPLICABLE"


def test_a_thinker_gets_the_special_ids_real_checkpoints_carry():
    """Qwen2.5-Omni's thinker config class defines no vision_start_token_id, which its rotary index reads when
    an attention mask is given: the tiny model gets the released checkpoint's, and its forward runs."""
    from onboard.checks import AttentionCheck

    attn = by_code(run_checks(make_session("tiny:qwen2_5_omni_thinker"), [LoadCheck, AttentionCheck]))["ATTN001"]
    assert attn.status is Status.PASS, attn.message


def test_attention_causal_makes_eager_attention_causal_too():
    """sdpa reads the modules' is_causal flag, eager only the mask, which BERT builds causal from is_decoder:
    attention.causal must set both, or eager training still reads the answer."""
    from onboard.checks import AttentionCheck

    attn = by_code(run_checks(make_session("tiny:bert", attn="eager"), [LoadCheck, AttentionCheck]))["ATTN001"]
    assert attn.diagnosis == "FM-ATTN-NONCAUSAL" and attn.fixed, attn.message
    assert attn.fix.measurements_after["future_leak"].value == 0


def test_xlnets_own_switch_makes_it_causal_and_a_model_without_one_is_named():
    """XLNet attends both ways with its default attn_type "bi"; attention.causal turns it to "uni", its causal
    attention, and ATTN001's probe then moves earlier log-probabilities by exactly 0 (issue 26). CPM-Ant builds an
    all-ones context into its mask in code: no switch reaches it, the finding stays, and the reason says what was
    looked for."""
    from onboard.checks import AttentionCheck

    attn = by_code(run_checks(make_session("tiny:xlnet"), [LoadCheck, AttentionCheck]))["ATTN001"]
    assert attn.diagnosis == "FM-ATTN-NONCAUSAL" and attn.fixed and attn.fix.patch_id == "attention.causal"
    assert attn.measurements["future_leak"].value > 1e-3 and attn.fix.measurements_after["future_leak"].value == 0
    cpmant = by_code(run_checks(make_session("tiny:cpmant"), [LoadCheck, AttentionCheck]))["ATTN001"]
    assert cpmant.diagnosis == "FM-ATTN-NONCAUSAL" and cpmant.blocking and cpmant.fix is None
    # the line that hard-codes it: the function of the model's source that returned the mask its layers got
    assert "no switch" in cpmant.message and "CpmAntModel._prepare_attention_mask (modeling_cpmant.py:" in cpmant.message
    from onboard.patches import get_patch

    session = make_session("tiny:cpmant")
    assert "no switch that makes its attention causal" in get_patch("attention.causal").applies_to(session.model)


def test_causal_xlnet_trains_right_padded_batches_as_each_sample_alone():
    """transformers' XLNet fails any padded batch of two rows under attn_type "uni" (an in-place add of the padding
    mask into its causal mask cannot broadcast). attention.causal drops a mask that only marks right padding: under a
    causal mask it hides nothing from a real token, so each row's logits equal the sample's alone, exactly enough
    for training (the unpacked fallback and TRAIN001 run such batches); revert restores the model's own path."""
    import torch

    from onboard.harness.forward import batch_tensors
    from onboard.patches import get_patch

    session = make_session("tiny:xlnet")
    model, examples = session.model, sorted(session.examples, key=len)[:2]
    batch = batch_tensors(examples, session.device, session.pad_id)
    handle = get_patch("attention.causal").apply(model)
    with torch.no_grad():
        padded = model(**batch).logits
        for row, ex in enumerate(examples):
            alone = model(input_ids=torch.tensor([ex.input_ids])).logits[0]
            assert (padded[row, : len(ex)] - alone).abs().max().item() <= 1e-5
    handle.revert()
    assert model.transformer.attn_type == "bi" and not model.transformer._forward_pre_hooks


def test_a_kernel_package_that_refuses_is_not_the_models_fault(tmp_path, monkeypatch):
    """On an H200, flash-linear-attention refused its backward on the installed Triton and ATTN001 called Qwen3.5's
    forward broken (FM-MODEL-FORWARD). An error raised inside an optional kernel package names the package; the
    check is ERROR (onboard cannot judge), never a finding on the architecture."""
    import importlib
    import sys

    from onboard.checks.attention import _kernel_package

    package = tmp_path / "fla" / "ops"
    package.mkdir(parents=True)
    (tmp_path / "fla" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("def chunk():\n    raise RuntimeError('Triton < 3.7.1 on Hopper')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fla", raising=False)
    ops = importlib.import_module("fla.ops")
    try:
        ops.chunk()
    except RuntimeError as exc:
        assert _kernel_package(exc) == "fla"
    try:
        raise ValueError("the model's own")
    except ValueError as exc:
        assert _kernel_package(exc) is None
    sys.modules.pop("fla.ops", None)
    sys.modules.pop("fla", None)


def test_a_loss_that_is_neither_next_token_nor_unshifted_has_no_fix():
    """ProphetNet's causal LM averages two streams (the next token and the one after) against the same labels: its
    own loss is neither the next-token nor the unshifted cross-entropy of its logits. The fused loss fails, the
    fallback (the model's own loss) does not verify, no label shift is proposed, and nothing unverified is listed
    for training."""
    from onboard.checks import CceCheck

    report = run_checks(make_session("tiny:prophetnet"), [LoadCheck, LoraCheck, CceCheck])
    cce = by_code(report)["CCE001"]
    assert cce.diagnosis == "FM-CCE-MATH" and cce.fix.patch_id == "cce.model_loss" and not cce.fix.verified
    assert cce.blocking and report.verdict.value == "NOT_READY" and cce.proposed_patch != "labels.shift"
    assert "cce.model_loss" not in report.verified_patches  # a fallback that did not verify is not trained with


def test_a_loss_that_is_not_next_token_is_fixed_by_shifting_its_labels():
    """Bart's causal LM trains position t on token t: the fused loss fails, and the model's own loss (the fallback)
    is not the next-token loss either. labels.shift, proposed first, is verified: with each sample's labels
    shifted, the model's loss is the next-token cross-entropy of its logits and the fused loss matches it."""
    from onboard.checks import CceCheck

    report = run_checks(make_session("tiny:bart"), [LoadCheck, LoraCheck, CceCheck])
    cce = by_code(report)["CCE001"]
    assert cce.diagnosis == "FM-CCE-MATH" and cce.fix.patch_id == "labels.shift" and cce.fix.verified, cce.message
    assert cce.fix.measurements_after["loss_rel_diff"].within and report.verdict.value == "READY_WITH_FIXES"
    assert "labels.shift" in report.verified_patches
    assert "cce.model_loss" not in report.verified_patches  # a fallback that did not verify is not trained with
