"""Models whose training is not next-token text: NOT_APPLICABLE with what they need, and encoder-decoders probed as
seq2seq (the chat up to its last reply to the encoder, the reply as the labels)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from conftest import by_code, make_session, run_all

from onboard.harness.result import ExitCode, RunReport, Status, Verdict


@pytest.mark.parametrize("arch, needs", [
    ("blip", "pixel_values: required arguments of BlipForConditionalGeneration.forward"),  # its signature
    ("udop", "bbox: inputs text data lacks"),  # its error names a forward parameter ("Bbox is required ...")
    ("git", "pixel_values: GitForCausalLM's loss needs image positions"),  # with pixels its labelled step runs
    ("musicgen", "labels of another kind than text tokens"),  # runs without labels, its loss refuses text labels
    ("diffusion_gemma", "an objective other than labelled next tokens"),  # given labels, no loss
])
def test_a_model_that_needs_more_than_text_is_not_applicable(arch, needs):
    report = run_all(make_session(f"tiny:{arch}"))
    attn = by_code(report)["ATTN001"]
    assert attn.status is Status.SKIP and attn.needs.startswith(needs), attn.message
    assert report.verdict is Verdict.NOT_APPLICABLE and report.exit_code() is ExitCode.NOT_APPLICABLE
    later = [c for c in report.checks if c.code not in ("LOAD001", "ATTN001")]
    assert all(c.status is Status.SKIP and c.message.startswith("not applicable") for c in later)
    again = RunReport.from_dict(report.to_dict())  # the JSON report keeps what it needs
    assert again.verdict is Verdict.NOT_APPLICABLE and by_code(again)["ATTN001"].needs == attn.needs


def test_git_with_pixels_trains_next_token_text():
    """The evidence behind GIT's NOT_APPLICABLE, in plain transformers: with pixel_values its loss is the
    next-token cross-entropy of its text logits (image positions left out), so text is what it lacks."""
    session = make_session("tiny:git")
    model, batch = session.model, session.probe_batch()
    vision = model.config.vision_config
    pixels = torch.randn(1, vision.num_channels, vision.image_size, vision.image_size)
    with torch.no_grad():
        out = model(**batch, pixel_values=pixels)
    text = out.logits[:, -batch["input_ids"].shape[1]:]
    ce = torch.nn.functional.cross_entropy(text[0, :-1], batch["labels"][0, 1:], ignore_index=-100)
    assert abs(out.loss.item() - ce.item()) <= 1e-5 * ce.item()


def test_not_applicable_exits_4_and_training_refuses_it(tmp_path):
    from onboard.cli import app

    runner = CliRunner()
    checked = runner.invoke(app, ["check", "tiny:blip", "--quiet"])
    assert checked.exit_code == 4, checked.output
    assert "NOT_APPLICABLE" in checked.output
    trained = runner.invoke(app, ["train", "tiny:blip", "--out", str(tmp_path / "run"), "--max-steps", "1"])
    assert trained.exit_code == 4, trained.output
    assert "needs pixel_values" in trained.output


@pytest.mark.parametrize("arch", ["t5gemma2", "florence2"])
def test_an_encoder_decoder_is_probed_as_seq2seq_and_trains_right_padded(arch):
    session = make_session(f"tiny:{arch}")
    assert session.task == "seq2seq" and session.describe()["task"] == "seq2seq"
    ex = session.examples[0]
    assert ex.seq2seq and len(ex.labels) != len(ex.input_ids)  # the reply is the labels, a sequence of its own
    report = run_all(session)
    checks = by_code(report)
    assert report.verdict is Verdict.READY, report.reason
    assert checks["ATTN001"].measurements["future_leak"].value == 0  # the decoder is causal, exactly
    assert checks["PACK001"].enables == "packing.unpacked" and "right-padded" in checks["PACK001"].message
    assert checks["TRAIN001"].measurements["loss_rel_diff"].value <= 1e-5
    assert "packing.unpacked" in report.verified_patches
    cce = checks["CCE001"]
    if arch == "t5gemma2":  # the fused loss on its decoder, unshifted, equals its own loss
        assert cce.enables == "cce.fused_loss" and cce.measurements["loss_rel_diff"].value <= 1e-4, cce.message
    else:  # Florence-2 builds its decoder's input inside its forward: its own loss alone is judged
        assert "prepare_decoder_input_ids_from_labels" in cce.message and cce.status is Status.PASS


def test_the_seq2seq_loss_is_the_unshifted_cross_entropy_of_the_decoder():
    """The ground truth onboard's seq2seq probes rest on, in plain torch: the model's loss is the cross-entropy of
    its decoder's logits at t against labels[t] (it shifts the labels into the decoder's input itself), not the
    next-token loss of a causal LM; and a later label moves no earlier logit."""
    session = make_session("tiny:t5gemma2")
    batch = session.probe_batch(2)
    with torch.no_grad():
        out = session.model(**batch)
        flat = out.logits.reshape(-1, out.logits.shape[-1])
        plain = torch.nn.functional.cross_entropy(flat, batch["labels"].reshape(-1), ignore_index=-100)
        shifted = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, flat.shape[-1]),
                                                    batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
        other = batch["labels"].clone()
        other[0, 3:] = torch.where(other[0, 3:] >= 0, (other[0, 3:] + 1) % 1000 + 3, other[0, 3:])
        moved = session.model(**{**batch, "labels": other}).logits[0, :3] - out.logits[0, :3]
    assert abs(out.loss.item() - plain.item()) <= 1e-6 * plain.item()
    assert abs(out.loss.item() - shifted.item()) > 1e-3
    assert moved.abs().max().item() == 0


def test_a_decoder_only_model_is_not_taken_for_seq2seq():
    session = make_session("tiny:llama")
    assert session.task == "causal" and not session.examples[0].seq2seq


def test_the_task_can_be_forced_and_is_recorded():
    session = make_session("tiny:t5gemma2", task="causal")  # probed as decoder-only: its logits follow the labels
    assert session.task == "causal"
    from onboard.checks import AttentionCheck, LoadCheck
    from onboard.harness.runner import run_checks

    attn = run_checks(session, [LoadCheck, AttentionCheck]).checks[1]
    assert attn.status is Status.FAIL and "--task seq2seq" in attn.message, attn.message


def test_onboard_train_trains_an_encoder_decoder(tmp_path):
    from onboard.cli import app

    out = tmp_path / "run"
    done = CliRunner().invoke(app, ["train", "tiny:t5gemma2", "--out", str(out), "--max-steps", "2"])
    assert done.exit_code == 0, done.output
    assert (out / "check_report.json").exists()
    report = RunReport.from_dict(__import__("json").loads((out / "check_report.json").read_text()))
    assert report.model["task"] == "seq2seq" and "packing.unpacked" in report.verified_patches


def test_xmod_gets_its_language_as_its_api_requires():
    """X-MOD's forward refuses text until set_default_language() is called: the load makes that call (its first
    configured language), says so, and the model trains like its RoBERTa family."""
    session = make_session("tiny:xmod")
    assert session.setup_calls == ["model.set_default_language('en_XX')"]
    report = run_all(session)
    assert by_code(report)["LOAD001"].measurements["setup_calls"].value == "model.set_default_language('en_XX')"
    assert report.verdict is Verdict.READY_WITH_FIXES, report.reason


def test_t5_is_built_as_seq2seq_and_its_accumulation_finding_is_fixed():
    """tiny:t5 (a text-to-text class in neither the causal nor the image-text mapping) is built as
    T5ForConditionalGeneration and probed as seq2seq. Its loss takes num_items_in_batch through **kwargs and ignores
    it while the Trainer stops dividing by the accumulation steps (huggingface/transformers#47688): GA001 finds it,
    and loss.num_items_in_batch, counting the labels whole as the Trainer does for an encoder-decoder, verifies."""
    report = run_all(make_session("tiny:t5"))
    checks = by_code(report)
    assert report.model["class"] == "T5ForConditionalGeneration" and report.model["task"] == "seq2seq"
    assert checks["GA001"].diagnosis == "FM-LOSS-GA" and checks["GA001"].fixed, checks["GA001"].message
    assert report.verdict is Verdict.READY_WITH_FIXES, report.reason
    assert {"packing.unpacked", "loss.num_items_in_batch"} <= set(report.verified_patches)
    assert checks["CCE001"].enables == "cce.fused_loss"  # live on its decoder, unshifted, equal to its own loss


def test_roberta_packs_once_its_positions_start_where_it_numbers_a_sample():
    """RoBERTa numbers a sample from padding_idx + 1 when given no positions; packed rows numbered from 0 moved each
    sample (the family fell back to unpacked training). The session measures the start (the one whose position_ids
    reproduce the sample alone exactly), packed rows and the collator follow it, and the block mask verifies."""
    from onboard.patches import training_collator

    session = make_session("tiny:roberta")
    assert session.position_start == session.model.config.pad_token_id + 1
    report = run_all(session)
    pack, train = by_code(report)["PACK001"], by_code(report)["TRAIN001"]
    assert pack.fixed and pack.fix.patch_id == "packing.block_mask", report.reason
    assert pack.measurements["position_start"].value == session.position_start
    assert train.status is Status.PASS and train.measurements["loss_rel_diff"].value <= 1e-5
    assert report.model["position_start"] == session.position_start
    collator = training_collator(report.verified_patches, 0, position_start=session.position_start)
    assert collator([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}])["position_ids"].tolist() == [[1, 2, 3, 1, 2]]


def test_fsmt_is_fed_as_the_seq2seq_collator_feeds_it_and_its_label_bug_is_found():
    """FSMT's forward, given labels alone, feeds its decoder the shifted encoder input; DataCollatorForSeq2Seq(model=)
    sends decoder_input_ids from its prepare_decoder_input_ids_from_labels, and so does the session (named among
    the setup calls): its decoder is then causal (ATTN001 passes). That method replaces the -100s of the labels with
    the pad id in place (modeling_fsmt.py, shift_tokens_right: masked_fill_), so a padded batch trains on its
    padding: TRAIN001 finds the padded step's loss off the samples' (a true finding, shown here in plain torch)."""
    session = make_session("tiny:fsmt")
    assert session.task == "seq2seq" and any("prepare_decoder_input_ids_from_labels" in c for c in session.setup_calls)
    labels = torch.tensor([[5, 6, -100]])
    session.model.prepare_decoder_input_ids_from_labels(labels=labels)
    assert labels.tolist() == [[5, 6, session.model.config.pad_token_id]]  # the caller's labels, changed
    report = run_all(session)
    checks = by_code(report)
    assert checks["ATTN001"].status is Status.PASS, checks["ATTN001"].message
    assert checks["TRAIN001"].diagnosis == "FM-TRAIN-LOSS" and report.verdict is Verdict.NOT_READY


def test_an_encoder_decoder_whose_logits_the_fused_loss_cannot_make_falls_back_to_its_own_loss():
    """LED adds final_logits_bias after its output layer, so the fused loss cannot run on it (as Marian's decoder);
    the fallback, its own loss over full logits, is judged as seq2seq's (the unshifted cross-entropy of the
    decoder's logits), verified, its cost stated, and never turned into a label shift."""
    report = run_all(make_session("tiny:led"))
    cce = by_code(report)["CCE001"]
    assert cce.diagnosis == "FM-CCE-MATH" and cce.fixed and cce.fix.patch_id == "cce.model_loss", cce.message
    assert "labels.shift" not in report.verified_patches and report.verdict is Verdict.READY_WITH_FIXES
