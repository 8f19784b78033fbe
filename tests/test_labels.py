"""labels.shift (issue 26, item 1): a class whose own loss trains position t on labels[t] (BartForCausalLM) gets
each sample's labels shifted before its forward; the check run verifies it, and training applies it."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from onboard.cli import app
from onboard.patches.labels import shift_labels


def test_labels_move_one_position_within_each_sample():
    labels = torch.tensor([[-100, 5, 6, 7, -100, 9, 10, 11]])
    packed = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]])  # two samples in one row, as the packing collator numbers them
    assert shift_labels(labels, packed).tolist() == [[5, 6, 7, -100, 9, 10, 11, -100]]
    # without position_ids (a right-padded batch) each row is one sample; its padding is already -100
    padded = torch.tensor([[-100, 5, 6, -100], [-100, 2, -100, -100]])
    assert shift_labels(padded).tolist() == [[5, 6, -100, -100], [2, -100, -100, -100]]
    # a sample whose first token is trained: the previous sample's last position must not learn it
    assert shift_labels(torch.tensor([[1, 2, 3, 4]]), torch.tensor([[0, 1, 0, 1]])).tolist() == [[2, -100, 4, -100]]
    mrope = torch.stack([packed] * 3)  # (3, batch, seq): one numbering for the three axes
    assert shift_labels(labels, mrope).tolist() == shift_labels(labels, packed).tolist()


def test_the_patched_loss_is_the_next_token_loss_and_training_applies_it(tmp_path):
    """Tiny Bart: its own loss on labels = input_ids is the unshifted cross-entropy; with labels.shift it is the
    next-token cross-entropy of the same logits, exactly. onboard train runs the fix the check verified."""
    from onboard.harness.session import ModelSession
    from onboard.patches import get_patch, ids

    session = ModelSession(model="fault:labels-unshifted", device="cpu")
    batch = session.probe_batch()
    model = session.model
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        plain = model(**batch).loss.item()
        with get_patch(ids.LABELS_SHIFT).apply(model):
            shifted = model(**batch).loss.item()
    vocab = logits.shape[-1]
    unshifted_ce = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), batch["labels"].reshape(-1)).item()
    next_token_ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab),
                                                      batch["labels"][:, 1:].reshape(-1)).item()
    assert abs(plain - unshifted_ce) < 1e-5 and abs(shifted - next_token_ce) < 1e-5 and abs(plain - shifted) > 0.1
    out = CliRunner().invoke(app, ["train", "fault:labels-unshifted", "--max-steps", "1", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    trained = json.loads((tmp_path / "train_report.json").read_text())
    assert ids.LABELS_SHIFT in trained["patches_applied"]
