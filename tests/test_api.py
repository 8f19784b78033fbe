"""The Python API on the trainers people use: `onboard.check`, `onboard.lora_config`, `onboard.apply_patches`.

What TRL's SFTTrainer and the HF Trainer run with the report's patches is what `onboard train` runs: the first
step's loss is the same number on the same data and setup. A report on another model or setup is refused.
"""

from __future__ import annotations

import pytest
import torch

import onboard
from conftest import make_session

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def tiny_report():
    return onboard.check("tiny:llama", device="cpu")


def _rows(session):
    return [{"input_ids": ex.input_ids, "labels": ex.labels} for ex in session.examples]


def _onboard_first_loss(model: str, report, tmp_path, **setup) -> float:
    from onboard.train import TrainOptions, train

    session = make_session(model, **setup)
    result = train(session, report.verified_patches, TrainOptions(out=tmp_path / "onboard", max_steps=1))
    return result.records[0]["loss"]


def _hf_first_loss(session, report, tmp_path) -> tuple[float, list[str]]:
    """The HF Trainer as a user writes it, with onboard's LoRA config and patches."""
    from peft import get_peft_model
    from transformers import DataCollatorWithFlattening, Trainer, TrainingArguments, set_seed

    set_seed(0)
    model = get_peft_model(session.model, onboard.lora_config(report, session.model))
    args = TrainingArguments(str(tmp_path / "hf"), per_device_train_batch_size=8, max_steps=1, learning_rate=2e-4,
                             logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=0,
                             data_seed=0, remove_unused_columns=False, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=_rows(session),
                      data_collator=DataCollatorWithFlattening(return_position_ids=True))
    with onboard.apply_patches(trainer, report) as applied:
        trainer.train()
    return trainer.state.log_history[0]["loss"], applied.applied


def test_hf_trainer_with_the_reports_patches_takes_onboard_trains_first_step(tiny_report, tmp_path):
    assert tiny_report.verdict.value == "READY"  # the HF Trainer keeps packed samples apart on tiny Llama
    session = make_session("tiny:llama")
    loss, applied = _hf_first_loss(session, tiny_report, tmp_path)
    assert "speed.packed_attention" in applied  # the lever KERN001 verified
    assert loss == pytest.approx(_onboard_first_loss("tiny:llama", tiny_report, tmp_path), rel=1e-6)


def test_trl_sft_trainer_with_the_reports_patches_takes_onboard_trains_first_step(tiny_report, tmp_path):
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    session = make_session("tiny:llama")
    set_seed(0)
    config = SFTConfig(str(tmp_path / "trl"), per_device_train_batch_size=8, max_steps=1, learning_rate=2e-4,
                       logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=0, data_seed=0,
                       padding_free=True, max_length=None, disable_tqdm=True,
                       gradient_checkpointing=False)  # TRL turns it on by default; the check ran without (CPU)
    trainer = SFTTrainer(model=session.model, args=config, train_dataset=Dataset.from_list(_rows(session)),
                         processing_class=session.tokenizer,
                         peft_config=onboard.lora_config(tiny_report, session.model))
    with onboard.apply_patches(trainer, tiny_report) as applied:
        assert applied.applied and "speed.packed_attention" in applied.applied
        trainer.train()
    loss = trainer.state.log_history[0]["loss"]
    # TRL's padding-free collator gives the same tokens, labels and positions as onboard's, and also cu_seq_lens,
    # which takes attention through another mask path: equal to fp32 rounding (measured 4.7e-6 relative)
    assert loss == pytest.approx(_onboard_first_loss("tiny:llama", tiny_report, tmp_path), rel=2e-5)


def test_the_handle_reverts_what_it_applied(tiny_report):
    session = make_session("tiny:llama")
    config = session.model.config
    backend = config._attn_implementation
    with onboard.apply_patches(session.model, tiny_report) as applied:
        assert "speed.packed_attention" in applied.applied
        assert config._attn_implementation != backend  # what the lever switches
        assert "cce.fused_loss" in applied.skipped  # the fused loss is for the GPU, as onboard train does
    assert config._attn_implementation == backend


def test_an_unpacked_fallback_reaches_your_trainer(tmp_path):
    """A report whose packing fix is the fallback (packed samples are positioned over the row: fault
    pack-positions) gives a right-padded collator, and refuses a TRL trainer that packs anyway."""
    from trl import SFTConfig

    from onboard.patches.packing import RightPadding

    report = onboard.check("fault:pack-positions", device="cpu")
    assert report.verdict.value == "READY_WITH_FIXES" and "packing.unpacked" in report.verified_patches
    session = make_session("fault:pack-positions")
    collator = onboard.collator(report, session.tokenizer)
    assert isinstance(collator, RightPadding)
    batch = collator(_rows(session)[:3])
    assert batch["attention_mask"].sum() == sum(len(ex) for ex in session.examples[:3])
    packing = SFTConfig(str(tmp_path / "trl"), padding_free=True, use_cpu=True, report_to="none",
                        gradient_checkpointing=False, max_length=None)

    class Holder:  # what apply_patches reads of a trainer: its model and arguments
        model, args = session.model, packing

        def train(self):
            pass

    with pytest.raises(onboard.SetupMismatch, match="padding_free on, but packed samples are not kept apart"):
        onboard.apply_patches(Holder(), report)
    assert type(onboard.collator(onboard.check("tiny:llama", device="cpu", trainer="custom"), session.tokenizer)
                ).__name__ == "DataCollatorWithFlattening"


def test_a_report_on_another_model_or_setup_is_refused(tiny_report):
    from peft import get_peft_model

    other = make_session("tiny:qwen2")
    with pytest.raises(onboard.SetupMismatch, match="another model"):
        onboard.apply_patches(other.model, tiny_report)
    session = make_session("tiny:llama")
    config = onboard.lora_config(tiny_report, session.model)
    config.r = 8  # not the rank the checks ran
    with pytest.raises(onboard.SetupMismatch, match="lora_rank 16 checked, 8 here"):
        onboard.apply_patches(get_peft_model(session.model, config), tiny_report)
    with pytest.raises(onboard.SetupMismatch, match="dtype 'float32' checked, 'bfloat16' here"):
        onboard.apply_patches(make_session("tiny:llama", dtype="bfloat16").model, tiny_report)


def test_check_takes_setup_keywords_and_names_a_typo():
    from onboard.harness.errors import BadInput

    with pytest.raises(BadInput, match="did you mean lora_rank"):
        onboard.check("tiny:llama", device="cpu", lora_rnak=4)


@pytest.mark.slow
def test_trainers_on_smollm2_take_onboard_trains_first_step(smollm2_report, tmp_path):
    """The pretrained default model: the HF Trainer with the report's patches and LoRA config gives the first
    step's loss of `onboard train` (same data, same setup)."""
    session = make_session("smollm2")
    loss, applied = _hf_first_loss(session, smollm2_report, tmp_path)
    assert applied == [p for p in smollm2_report.verified_patches if p != "cce.fused_loss"]
    assert loss == pytest.approx(_onboard_first_loss("smollm2", smollm2_report, tmp_path), rel=1e-5)


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    """The README's API example, extracted and run as a user pastes it."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Your own trainer")[1]
    code = section.split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 1 and "speed.packed_attention" in namespace["applied"].applied


def test_a_fused_moe_adapter_built_from_lora_config_is_accepted():
    """PEFT 0.21 rewrites a fused-MoE model's LoraConfig in place in get_peft_model (the v4 expert names become
    target_parameters): the adapter built from onboard.lora_config as documented is the checked one, and
    apply_patches takes it. It refused every such model (Qwen3-MoE, Mixtral) before."""
    from peft import get_peft_model

    report = onboard.check("tiny:qwen3_moe", device="cpu")
    session = make_session("tiny:qwen3_moe")
    model = get_peft_model(session.model, onboard.lora_config(report, session.model))
    assert model.peft_config["default"].target_parameters  # PEFT added the experts
    with onboard.apply_patches(model, report) as applied:
        assert set(applied.applied) <= set(report.verified_patches)


def test_a_patched_forward_keeps_its_signature_for_the_trainers_column_filter():
    """cce.fused_loss wraps the model's forward: the Trainer keeps only the dataset columns the forward's signature
    names (remove_unused_columns), so a (*args, **kwargs) wrapper lost input_ids (KeyError in the collator)."""
    import inspect

    from onboard.patches import get_patch, ids

    session = make_session("tiny:llama")
    before = list(inspect.signature(session.model.forward).parameters)
    with get_patch(ids.CCE_FUSED_LOSS).apply(session.model, session):
        assert list(inspect.signature(session.model.forward).parameters) == before


def test_a_lever_verified_beside_one_left_off_is_trained_with(tmp_path):
    """KERN001 warns when one lever changes the math and verifies another: stock Llama 4 in bf16, whose layers pass
    the attention no position_ids (speed.packed_attention left off), whose adapters compute in bf16 within the
    rounding rule (speed.bf16_adapters verified). The verified lever is in the report's verified patches, in what
    onboard train applies, and in what apply_patches applies to a Trainer."""
    from conftest import by_code

    report = onboard.check("fault:kern-math", device="cpu", dtype="bfloat16")
    kern = by_code(report)["KERN001"]
    assert kern.status.value == "WARN" and kern.diagnosis == "FM-KERN-MATH", kern.message
    assert kern.enables == ["speed.bf16_adapters"]
    assert "speed.bf16_adapters" in report.verified_patches
    assert "speed.packed_attention" not in report.verified_patches
    from onboard.train import TrainOptions, train

    trained = train(make_session("fault:kern-math", dtype="bfloat16"), report.verified_patches,
                    TrainOptions(out=tmp_path / "onboard", max_steps=1), check_report=report)
    assert "speed.bf16_adapters" in trained.report["patches_applied"]
    _, applied = _hf_first_loss(make_session("fault:kern-math", dtype="bfloat16"), report, tmp_path)
    assert "speed.bf16_adapters" in applied and "speed.packed_attention" not in applied
