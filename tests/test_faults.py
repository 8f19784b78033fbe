"""The fault catalog: each failure mode on a real model that has it, found by the right check, with the
right failure mode and patch, and fixed by that patch (re-check verified)."""

import re
from pathlib import Path

import pytest
import torch

from conftest import by_code, make_session, run_all
from onboard.fixtures.faults import FAULTS
from onboard.harness.result import Status, Verdict
from onboard.patches import PATCHES, get_patch, is_lora_transform, lora_config

STRUCTURAL = [name for name, fault in FAULTS.items() if fault.random_weights]


def fault_session(name: str, **kwargs):
    """The session `onboard check fault:NAME` opens: ModelSession applies every trigger of the fault itself."""
    return make_session(f"fault:{name}", **kwargs)


def test_every_failure_mode_has_a_fault():
    """Each failure mode a check can report has a real model in the catalog that has it."""
    import onboard.checks

    named = set()
    for source in Path(onboard.checks.__file__).parent.glob("*.py"):
        named |= set(re.findall(r"FM-[A-Z]+(?:-[A-Z]+)*", source.read_text(encoding="utf-8")))
    covered = {fault.failure_mode for fault in FAULTS.values()}
    assert not named - covered, sorted(named - covered)
    assert covered <= named, sorted(covered - named)  # and no fault of a failure mode no check names


@pytest.mark.parametrize("name", STRUCTURAL)
def test_fault_is_found_and_fixed(name):
    fault = FAULTS[name]
    report = run_all(fault_session(name), unsafe_fixes=fault.unsafe)
    found = by_code(report)[fault.check]
    assert found.diagnosis == fault.failure_mode, (found.status, found.message)
    assert found.status in (Status.FAIL, Status.WARN)
    # the patch is the first proposed, one of the alternatives tried after it, or the fallback (a slower setup)
    assert fault.patch in (found.proposed_patch, *found.alternatives, found.fallback_patch) if fault.patch else \
        found.proposed_patch is None
    if fault.patch:
        assert found.fix is not None and found.fix.verified, found.fix
        assert found.fix.patch_id == fault.patch, (found.fix.patch_id, found.fix.tried)
        assert fault.patch in report.verified_patches
    else:
        assert found.fix is None
        # no fix: the model is not ready, unless the finding only costs speed (a lever left off: WARN)
        assert report.verdict is Verdict.NOT_READY or (found.status is Status.WARN and not found.blocking)
    errors = [c.code for c in report.checks if c.status is Status.ERROR]
    assert not errors, errors


def test_the_accumulation_fault_adds_one_finding_to_its_architecture():
    """A fault shows its failure mode and nothing else of its own: fault:loss-ga's findings are stock tiny
    Llama's (its packing leak under the default cache) plus GA001's FM-LOSS-GA."""
    def findings(name):
        return {(c.code, c.diagnosis) for c in run_all(make_session(name)).checks
                if c.status in (Status.FAIL, Status.WARN, Status.ERROR)}

    assert findings("fault:loss-ga") - findings("tiny:llama") == {("GA001", "FM-LOSS-GA")}


def test_a_wrong_training_loss_is_blamed_on_what_causes_it():
    """TRAIN001 explains FM-TRAIN-LOSS by re-running the samples unpacked with what the Trainer passed: a loss
    that misuses num_items_in_batch is wrong there too (the model's), a packing leak is right there (packing's)."""
    from onboard.checks import AttentionCheck, LoadCheck, LoraCheck, TrainStepCheck
    from onboard.harness.runner import run_checks

    summing = by_code(run_all(fault_session("train-loss")))["TRAIN001"]
    ms = summing.measurements
    assert summing.diagnosis == "FM-TRAIN-LOSS" and "unpacked too" in summing.message, summing.message
    assert ms["own_loss_unpacked"].value == pytest.approx(ms["train_loss"].value, rel=1e-3)
    leaking = by_code(run_checks(fault_session("pack-isolation"), [LoadCheck, AttentionCheck, LoraCheck,
                                                                    TrainStepCheck]))["TRAIN001"]
    ms = leaking.measurements
    assert leaking.diagnosis == "FM-TRAIN-LOSS" and "packing mixes them" in leaking.message, leaking.message
    assert ms["own_loss_unpacked"].value == pytest.approx(ms["loss_reference"].value, rel=1e-4)


@pytest.mark.slow
def test_checkpoint_missing_its_head_is_named_at_load():
    """FM-LOAD-MISSING: a pretrained checkpoint without its (untied) output head loads with a random head;
    LOAD001 names the tensor instead of leaving a random-level loss to be explained later."""
    report = run_all(make_session("fault:load-missing"), fix=False)
    load = by_code(report)["LOAD001"]
    assert load.status is Status.FAIL and load.diagnosis == "FM-LOAD-MISSING", load.message
    assert "lm_head.weight" in load.message and load.measurements["weights_missing"].value == 1
    assert report.verdict is Verdict.NOT_READY


def test_answers_truncated_away_are_named_by_the_loss_check():
    """FM-LOSS-MASK: a template's default system prompt longer than --max-length leaves no answer token in any
    sample; LOSS001 names it from the data, whatever the weights, and it is the run's only finding: the checks
    that compare losses say they cannot judge (SKIP), none blames the model."""
    from onboard.checks import InitialLossCheck
    from onboard.harness.runner import run_checks

    session = fault_session("loss-mask")
    assert session.max_length == 256 and all(ex.truncated and ex.n_trained == 0 for ex in session.examples)
    loss = run_checks(session, [InitialLossCheck]).checks[0]
    assert loss.status is Status.FAIL and loss.diagnosis == "FM-LOSS-MASK", loss.message
    assert loss.proposed_patch is None and loss.fix is None
    report = run_all(fault_session("loss-mask"))
    assert [c.code for c in report.checks if c.status in (Status.FAIL, Status.WARN) and c.diagnosis] == ["LOSS001"]
    assert {c.code for c in report.checks if c.status is Status.SKIP} >= {"PACK001", "CCE001", "GA001", "TRAIN001"}


@pytest.mark.slow
def test_chat_tokens_the_model_never_trained_read_as_template_loss():
    """FM-LOSS-TEMPLATE: SmolLM2 given a Llama 3 template as trl's clone_chat_template gives it (tokens added,
    embedding resized): its words cost what they did, the new <|eot_id|> costs far more: WARN, no patch."""
    from onboard.checks import AttentionCheck, InitialLossCheck, LoadCheck
    from onboard.harness.runner import run_checks

    report = run_checks(fault_session("loss-template"), [LoadCheck, AttentionCheck, InitialLossCheck])
    loss = by_code(report)["LOSS001"]
    assert loss.status is Status.WARN and loss.diagnosis == "FM-LOSS-TEMPLATE", loss.message
    assert loss.proposed_patch is None
    assert loss.measurements["loss_content"].value < 3.0 < loss.measurements["loss_template"].value
    assert loss.evidence["costliest_template_tokens"][0]["token"] == "<|eot_id|>"
    assert not [c.code for c in report.checks if c.status is Status.ERROR]


@pytest.mark.slow
def test_planted_weight_fault_reads_as_random():
    report = run_all(make_session("fault:loss-random"), fix=False)
    loss = by_code(report)["LOSS001"]
    assert loss.status is Status.FAIL and loss.diagnosis == "FM-LOSS-RANDOM"
    # 0.96 x ln V: above the 0.8 threshold and below 1.0, so a threshold moved to 1.0 or 1.1 lets it pass
    assert 0.8 <= loss.measurements["loss_over_ln_vocab"].value < 1.0


def test_unsafe_fix_waits_for_the_flag():
    """lora.expert_parameters changes what is trained: without --unsafe-fixes it is only proposed."""
    report = run_all(make_session("fault:lora-experts"))
    lora = by_code(report)["LORA001"]
    assert lora.status is Status.WARN and lora.diagnosis == "FM-LORA-EXPERTS"
    assert lora.fix is None and "--unsafe-fixes" in lora.evidence["unapplied_fix"]
    assert "lora.expert_parameters" not in report.verified_patches


# the model each patch is exercised on: one that the patch changes
PATCH_MODELS = {
    "packing.no_cache_no_mask": ("tiny:llama", {}),
    "packing.block_mask": ("fault:pack-isolation", {}),
    "packing.sample_boundaries": ("tiny:llama", {}),  # a padded batch: no boundaries to add, nothing changes
    "packing.unpacked": ("tiny:llama", {}),
    "packing.segment_conv": ("tiny:mamba", {}),  # depthwise causal convolutions; a padded batch runs them as they were  # the collator's choice: the model is left as it is
    "cce.model_loss": ("tiny:llama", {}),  # the fallback: the model's own loss, the model as it is
    "cce.fused_loss": ("tiny:llama", {}),
    "labels.shift": ("tiny:bart", {}),  # the logits are the same; the wrapped forward goes with the revert
    "attention.fallback": ("tiny:llama", {"attn": "eager"}),
    "attention.causal": ("fault:attn-noncausal", {}),
    "inputs.token_type_ids": ("fault:input-extra", {}),
    "loss.num_items_in_batch": ("fault:loss-ga", {}),
    "loss.accepts_num_items": ("fault:ga-weights", {}),
    "lora.wrapped_linear_targets": ("fault:lora-wrapped", {}),
    "lora.exclude_unwrappable": ("fault:lora-unsupported", {}),
    "lora.expert_parameters": ("fault:lora-experts", {}),
    "speed.packed_attention": ("tiny:llama", {}),
    "speed.compiled_layers": ("tiny:llama", {}),  # compiled on the CPU here (the lever itself is CUDA-only)
    "speed.bf16_adapters": ("tiny:llama", {"dtype": "bfloat16"}),  # on the LoRA-wrapped model, as KERN001 applies it
    "moe.experts_implementation": ("tiny:qwen3_moe", {}),
    "fsdp.wrap_class": ("fault:fsdp-wrap", {}),  # what FSDP reads is put back: the model never computed otherwise  # grouped_mm (as loaded) -> batched_mm -> grouped_mm
}


def test_every_patch_has_a_revert_test():
    assert set(PATCH_MODELS) == set(PATCHES)


@pytest.mark.parametrize("patch_id", sorted(PATCH_MODELS))
def test_apply_then_revert_leaves_the_model_unchanged(patch_id):
    spec, options = PATCH_MODELS[patch_id]
    session = make_session(spec, **options)
    model, patch = session.model, get_patch(patch_id)
    if patch_id == "speed.bf16_adapters":  # a lever on the adapters: LoRA first, its B matrices nonzero
        from peft import get_peft_model

        model = get_peft_model(model, session.lora_config())
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=1e-2)
    batch = session.probe_batch(2)

    def snapshot():
        with torch.no_grad():
            out = model(**batch)
        return out.logits.clone(), out.loss.item(), {k: v.clone() for k, v in model.state_dict().items()}

    config = model.config.get_text_config()
    before, use_cache = snapshot(), config.use_cache
    attrs = dict(vars(model))
    if is_lora_transform(patch):  # a LoRA-config transform has no apply(): it rewrites the config, not the model
        plain = lora_config(model, session.lora_targets, (), session.lora_rank, session.lora_alpha)
        assert patch.configure(plain, model) != plain  # the model is one it changes
    else:
        if patch_id == "speed.compiled_layers":
            from onboard.patches.speed import CompiledLayersPatch

            patch = CompiledLayersPatch(devices=("cpu",))
        choice = {patch_id: "batched_mm"} if patch_id == "moe.experts_implementation" else None  # MOE001's
        handle = patch.apply(model, session.patch_context(choice))
        handle.revert()
    after = snapshot()
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    assert after[1] == before[1]
    assert after[2].keys() == before[2].keys()
    assert all(torch.equal(after[2][k], before[2][k]) for k in before[2])
    assert set(vars(model)) == set(attrs)  # no attribute left behind (forward overrides, flags)
    assert config.use_cache == use_cache
