"""onboard train on the embedded SmolLM2 (real weights, fp32 CPU) and, for refusals, on tiny fault models."""

from __future__ import annotations

import json
import math
import signal

import pytest
import torch
from transformers import TrainerCallback
from typer.testing import CliRunner

from conftest import make_session
from onboard.cli import app
from onboard.harness.errors import BadInput
from onboard.harness.forward import batch_tensors
from onboard.train import TrainOptions, train

pytestmark = pytest.mark.slow
PATCHES = ["packing.no_cache_no_mask"]  # what SmolLM2's check run verifies (CCE is GPU-only in training)
runner = CliRunner()


@pytest.fixture(scope="module")
def session():
    return make_session("smollm2", max_length=256)


def losses(result) -> list[float]:
    return [r["loss"] for r in result.records]


def test_loss_decreases_and_adapter_reloads(session, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from onboard.harness.gguf import embedded_folder

    opts = TrainOptions(out=tmp_path / "run", epochs=3, batch_size=4, lr=1e-3, save_steps=100)
    result = train(session, PATCHES, opts)
    steps_per_epoch = 4  # 16 built-in chats, 4 per step
    assert result.status == "completed" and result.steps == 3 * steps_per_epoch
    first, last = losses(result)[:steps_per_epoch], losses(result)[-steps_per_epoch:]
    assert sum(last) / len(last) < 0.9 * sum(first) / len(first), losses(result)  # the same samples, 2 epochs later

    report = json.loads((tmp_path / "run" / "train_report.json").read_text())
    assert report["patches_applied"] == PATCHES and "cce.fused_loss" not in report["patches_applied"]
    assert report["data"]["samples"] == 16 and report["data"]["sha256"]
    assert report["lora"]["trainable_params"] > 0 and report["tokens_per_s"] > 0
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13)) and all(r["trained_tokens"] > 0 for r in log)

    # the saved adapter, loaded through PEFT onto a fresh copy of the base model, gives the trained outputs
    session.revert_patches()
    session.peft_model.eval()
    batch = batch_tensors(session.examples[:2], session.device, session.pad_id)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        trained = session.peft_model(**inputs).logits
        base = AutoModelForCausalLM.from_pretrained(embedded_folder("smollm2"), dtype=torch.float32)
        reloaded = PeftModel.from_pretrained(base, tmp_path / "run" / "adapter")
        again = reloaded(**inputs).logits
        with reloaded.disable_adapter():
            untrained = reloaded(**inputs).logits
    assert torch.allclose(trained, again, atol=1e-4), (trained - again).abs().max()
    assert not torch.allclose(trained, untrained, atol=1e-2)  # and the adapter is not a no-op
    # the base is named as the user gave it, beside PEFT's cache-folder path
    named = json.loads((tmp_path / "run" / "adapter" / "onboard_base.json").read_text())
    assert named["model"] == "smollm2" and "SmolLM2-135M" in named["description"]


def test_packed_and_padded_training_agree(session, tmp_path):
    opts = dict(max_steps=3, batch_size=4, lr=1e-3, save_steps=100)
    packed = train(session, PATCHES, TrainOptions(out=tmp_path / "packed", **opts))
    padded = train(session, PATCHES, TrainOptions(out=tmp_path / "padded", packing=False, **opts))
    tokens_packed = [r["tokens"] for r in packed.records]
    assert tokens_packed == [r["tokens"] for r in padded.records]  # same samples, padding not counted
    for a, b in zip(losses(packed), losses(padded)):
        assert math.isclose(a, b, rel_tol=1e-4), (losses(packed), losses(padded))


def test_gradient_accumulation_gives_the_one_batch_step(session, tmp_path):
    """--grad-accum 2 of 2 samples is the step of 4 samples at once: the Trainer's token-count
    normalisation (GA001's subject) holds in training, for the loss and for the update it makes."""
    opts = dict(max_steps=2, lr=1e-3, save_steps=100)
    whole = train(session, PATCHES, TrainOptions(out=tmp_path / "one", batch_size=4, **opts))
    accumulated = train(session, PATCHES, TrainOptions(out=tmp_path / "ga", batch_size=2, grad_accum=2, **opts))
    assert [r["trained_tokens"] for r in whole.records] == [r["trained_tokens"] for r in accumulated.records]
    for a, b in zip(losses(whole), losses(accumulated)):
        assert math.isclose(a, b, rel_tol=1e-4), (losses(whole), losses(accumulated))


class InterruptAt(TrainerCallback):
    """Press Ctrl-C (a real SIGINT to this process) at the end of a step."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            signal.raise_signal(signal.SIGINT)


def test_interrupted_run_resumes_to_the_same_losses(session, tmp_path):
    opts = dict(max_steps=4, batch_size=4, lr=1e-3, save_steps=2)
    whole = train(session, PATCHES, TrainOptions(out=tmp_path / "whole", **opts))
    cut = train(session, PATCHES, TrainOptions(out=tmp_path / "cut", **opts), callbacks=(InterruptAt(2),))
    # Ctrl-C lets the step in flight finish, saves a checkpoint and stops
    assert cut.status == "interrupted" and cut.steps == 3
    assert (tmp_path / "cut" / "checkpoint-3").is_dir() and not (tmp_path / "cut" / "adapter").exists()
    with pytest.raises(BadInput, match="--resume"):  # never silently overwrite a run
        train(session, PATCHES, TrainOptions(out=tmp_path / "cut", **opts))
    with pytest.raises(BadInput, match="lr differ"):
        train(session, PATCHES, TrainOptions(out=tmp_path / "cut", resume=True, **{**opts, "lr": 5e-4}))
    resumed = train(session, PATCHES, TrainOptions(out=tmp_path / "cut", resume=True, **opts))
    assert resumed.status == "completed" and resumed.report["resumed_from"].endswith("checkpoint-3")
    assert [r["step"] for r in resumed.records] == [1, 2, 3, 4]  # the log continues the interrupted one
    for a, b in zip(losses(whole), losses(resumed)):
        assert math.isclose(a, b, rel_tol=1e-5), (losses(whole), losses(resumed))


def test_train_from_a_check_report(smollm2_report, tmp_path):
    from onboard.reports import json_report

    json_report.write(smollm2_report, tmp_path / "check.json")
    verified = smollm2_report.verified_patches
    res = runner.invoke(app, ["train", "smollm2", "--from", str(tmp_path / "check.json"), "--max-steps", "2",
                              "--batch-size", "2", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "run" / "train_report.json").read_text())
    assert report["check"]["verdict"] == smollm2_report.verdict.value and report["steps"] == 2
    # exactly the verified patches, less the fused loss that training uses on CUDA only
    assert report["patches_applied"] == [p for p in verified if p != "cce.fused_loss"]
    assert set(report["patches_skipped"]) == {"cce.fused_loss"} & set(verified)

    res = runner.invoke(app, ["train", "tiny:llama", "--from", str(tmp_path / "check.json"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "is a report on smollm2" in res.output
    # a report is a check of one setup: training at another LoRA rank or length is refused, the fields named,
    # before any model loads
    res = runner.invoke(app, ["train", "smollm2", "--from", str(tmp_path / "check.json"), "--lora-rank", "4",
                              "--max-length", "128", "--out", str(tmp_path / "y")])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "lora_rank 16 checked, 4 given" in text and "max_length 2048 checked, 128 given" in text, text
    assert "Loaded" not in text  # refused before the weights load, not after


def test_training_runs_the_setup_the_checks_ran(tmp_path):
    """Without --from the checks run first, on the session training then uses: the LoRA LORA001 built (rank,
    alpha, so its trainable parameters) is the LoRA trained, and TRAIN001's step had training's flags."""
    res = runner.invoke(app, ["train", "tiny:llama", "--max-steps", "1", "--batch-size", "2", "--lora-rank", "4",
                              "--lora-alpha", "8", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    check = json.loads((tmp_path / "run" / "check_report.json").read_text())
    trained = json.loads((tmp_path / "run" / "train_report.json").read_text())
    assert check["options"]["lora_rank"] == trained["lora"]["r"] == 4 and check["options"]["lora_alpha"] == 8
    lora = next(c for c in check["checks"] if c["code"] == "LORA001")
    assert lora["measurements"]["trainable_params"]["value"] == trained["lora"]["trainable_params"]
    step = next(c for c in check["checks"] if c["code"] == "TRAIN001")
    assert step["measurements"]["gradient_checkpointing"]["value"] == trained["options"]["gradient_checkpointing"]


def test_not_ready_model_is_refused_unless_forced(tmp_path):
    res = runner.invoke(app, ["train", "fault:train-loss", "--max-steps", "1", "--out", str(tmp_path / "a")])
    assert res.exit_code == 1, res.output
    assert "refused" in res.output and "FM-TRAIN-LOSS" in res.output and "--force" in res.output
    assert not (tmp_path / "a" / "train_report.json").exists()
    res = runner.invoke(app, ["train", "fault:train-loss", "--max-steps", "1", "--force", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "b" / "train_report.json").read_text())
    assert report["check"]["forced"] and report["check"]["verdict"] == "NOT_READY"


def test_a_failing_fused_loss_trains_with_the_models_own_loss_without_force(tmp_path):
    """fault:cce-math: the fused loss cannot add the bias the model puts on its logits; the fallback, the model's
    own loss, is verified, so the model is READY_WITH_FIXES and trains without --force, never with the fused loss."""
    res = runner.invoke(app, ["train", "fault:cce-math", "--max-steps", "1", "--cce", "on", "--out", str(tmp_path / "a")])
    assert res.exit_code == 2 and "did not verify cce.fused_loss" in " ".join(res.output.split()), res.output
    res = runner.invoke(app, ["train", "fault:cce-math", "--max-steps", "1", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "b" / "train_report.json").read_text())
    assert report["check"]["verdict"] == "READY_WITH_FIXES" and "cce.model_loss" in report["patches_applied"]
    assert "cce.fused_loss" not in report["patches_applied"]


def test_a_token_budget_of_padded_rows_counts_the_padding():
    """Unpacked training (the fallback) fills each micro-batch to --batch-tokens of padded tokens: the longest
    sample times the count, not the sum of the lengths."""
    from onboard.train.run import token_budget_groups

    lengths = [10, 30, 20, 20, 5]
    assert token_budget_groups(lengths, 60) == [[0, 1, 2], [3, 4]]  # packed: 60 real tokens, then 25
    assert token_budget_groups(lengths, 60, padded=True) == [[0, 1], [2, 3, 4]]  # 30 x 2 = 60, then 20 x 3
    assert token_budget_groups(lengths, 45, padded=True) == [[0], [1], [2, 3], [4]]  # 30 x 2 > 45 alone; 20 x 2 = 40; 20 x 3 > 45


def test_malformed_data_line_is_named(tmp_path):
    data = tmp_path / "chats.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    data.write_text(good + "\n" + good + "\n{not json\n")
    res = runner.invoke(app, ["train", "tiny:llama", "--data", str(data), "--out", str(tmp_path / "r")])
    text = res.output.replace("\n", " ")
    assert res.exit_code == 2 and "chats.jsonl:3:" in text.replace(" ", "") and "not valid JSON" in " ".join(text.split())


@pytest.mark.parametrize("budget", [120, 400])
def test_a_token_budget_fills_each_micro_batch_and_covers_the_data_once(budget, tmp_path):
    """--batch-tokens: each micro-batch holds the samples that fit the budget (a longer sample alone), one epoch
    sees every real token of the data once, and the steps are as many as the budget's groups."""
    from onboard.train.run import token_budget_groups

    tiny = make_session("tiny:llama")
    result = train(tiny, PATCHES, TrainOptions(out=tmp_path / "run", batch_tokens=budget, lr=1e-3, save_steps=100))
    lengths = [len(ex) for ex in tiny.examples]
    groups = token_budget_groups(lengths, budget)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in g) <= budget or len(g) == 1 for g in groups)
    tokens = [r["tokens"] for r in result.records]
    assert len(tokens) == len(groups) and sum(tokens) == sum(lengths)
    assert sorted(tokens) == sorted(sum(lengths[i] for i in g) for g in groups)
    assert all(t <= budget or t in lengths for t in tokens)


def test_a_token_budget_needs_packing_and_is_refused_before_loading(tmp_path):
    import time

    start = time.perf_counter()
    res = runner.invoke(app, ["train", "tiny:llama", "--batch-tokens", "256", "--no-packing", "--force",
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--no-packing" in " ".join(res.output.split()), res.output
    assert time.perf_counter() - start < 2  # no model was loaded, no check ran
    assert not (tmp_path / "r").exists()
