"""The training plan (onboard.train.plan): what a run's step keeps for backward, measured on a real tiny model, and
the checkpointing and micro-batches chosen for a device's free memory. The CPU has no device memory: the tests
give the plan a free-memory reading of their own; everything else is measured."""

from __future__ import annotations

import json

import pytest
from peft import get_peft_model

from conftest import make_session, run_all
from onboard.harness.samemath import as_trained
from onboard.train import TrainOptions, train
from onboard.train.plan import FIXED_RESERVE, MARGIN, _probe, _rows_of, candidates, choose, saved_bytes

GIB = 2**30


@pytest.fixture(scope="module")
def adapted():
    session = make_session("tiny:llama", max_length=512)
    return session, get_peft_model(session.model, session.lora_config())


def _worst(session, n=8):
    return sorted((len(ex) for ex in session.examples), reverse=True)[:n]


def test_the_probe_counts_what_a_forward_keeps_and_checkpointing_keeps_less(adapted):
    """The saved bytes of the micro-batch's shape: the fitted curve gives the direct count at the real length
    (both exact counts of the same forward), and full checkpointing keeps a fraction of it."""
    session, model = adapted
    worst = _worst(session)
    rows = _rows_of(worst, sum(worst), 1000, 0)
    direct = {}
    for every in (0, 1):
        with as_trained(session, model, every != 0):
            direct[every] = saved_bytes(model, rows, session.device)
        assert _probe(session, model, worst, every)(sum(worst)) == pytest.approx(direct[every], rel=1e-6)
    assert 0 < direct[1] < direct[0] / 2
    # twice the tokens keep at least twice the bytes (the sdpa mask of a packed row grows as T x T)
    assert _probe(session, model, worst, 0)(2 * sum(worst)) >= 2 * direct[0] * 0.99


def _budget_for(need: int) -> int:
    """The free memory at which a plan needing `need` bytes just fits."""
    return int((need + FIXED_RESERVE) / (1 - MARGIN)) + 1


def test_the_plan_is_the_least_recomputation_that_fits(adapted):
    session, model = adapted
    worst = _worst(session)
    fit = {every: _probe(session, model, worst, every) for every in (0, 1)}
    cands = candidates(2, len(worst), sum(worst), lambda every, t: fit[every](t), fixed=10**6, everies=(0, 1))
    need = {(c.every, c.split): c.need_bytes for c in cands}
    assert need[(0, 1)] > need[(1, 1)] and need[(0, 1)] > need[(0, 2)]
    # room for everything: no checkpointing, one micro-batch
    best = choose(cands, 64 * GIB)
    assert (best.every, best.split) == (0, 1)
    # room for no checkpointing at half the micro-batch but not at the whole: splitting costs no recompute
    # (rows this short run slower, which the cost says) and is chosen over recomputing when cheaper
    best = choose(cands, _budget_for(need[(0, 1)]) - 1)
    assert best is not None and (best.every, best.split) != (0, 1)
    assert best.cost == min(c.cost for c in cands if c.fits)
    # room for nothing but the smallest: full checkpointing on the smallest micro-batches
    smallest = min(cands, key=lambda c: c.need_bytes)
    best = choose(cands, _budget_for(smallest.need_bytes))
    assert (best.every, best.split) == (smallest.every, smallest.split) and best.every == 1
    assert choose(cands, _budget_for(smallest.need_bytes) - 2**20) is None


def test_an_explicit_choice_or_the_cpu_is_not_planned(tmp_path):
    from onboard.train.plan import plan_training

    session = make_session("tiny:llama", gradient_checkpointing=True)
    model = get_peft_model(session.model, session.lora_config())
    plan = plan_training(session, model, [100] * 8, 8, free_memory=lambda: 80 * GIB)
    assert not plan.planned and plan.checkpointing is True and "setup" in plan.why
    cpu = make_session("tiny:llama")
    plan = plan_training(cpu, get_peft_model(cpu.model, cpu.lora_config()), [100] * 8, 8)
    assert not plan.planned and plan.checkpointing is False and "cpu" in plan.why


@pytest.mark.slow
def test_a_planned_run_trains_the_same_math(tmp_path):
    """onboard train with a free-memory reading at which the whole micro-batch does not fit without checkpointing:
    the plan checkpoints (or splits the micro-batch, GA001 having verified accumulation), says so in
    train_report.json, and the first steps' losses are the unplanned run's (the plan changes memory, not math)."""
    session = make_session("tiny:llama", max_length=256)
    report = run_all(session)
    opts = dict(max_steps=3, batch_size=8, lr=1e-3, save_steps=100)
    plain = train(session, report.verified_patches, TrainOptions(out=tmp_path / "plain", **opts),
                  check_report=report, free_memory=lambda: 64 * GIB)
    roomy = json.loads((tmp_path / "plain" / "train_report.json").read_text())["plan"]
    assert roomy["planned"] and roomy["checkpointing"] is False and roomy["split"] == 1
    off = next(c for c in roomy["candidates"] if c["every"] == 0 and c["split"] == 1)
    tight = train(session, report.verified_patches, TrainOptions(out=tmp_path / "tight", **opts),
                  check_report=report, free_memory=lambda: _budget_for(off["need_bytes"]) - 1)
    written = json.loads((tmp_path / "tight" / "train_report.json").read_text())
    plan = written["plan"]
    assert plan["planned"] and (plan["checkpointing"] or plan["split"] > 1), plan
    assert written["options"]["gradient_checkpointing"] is plan["checkpointing"]
    assert [r["loss"] for r in tight.records] == pytest.approx([r["loss"] for r in plain.records], rel=1e-5)


def test_checkpointing_every_nth_layer_checkpoints_that_share_and_keeps_less(adapted):
    """--checkpoint-every 2 (transformers' every_n_layers) checkpoints half the decoder layers of a 4-layer model:
    what the step saves lies between no checkpointing and every layer."""
    from onboard.patches.speed import repeated_blocks

    session = make_session("tiny:llama:4", max_length=512, gradient_checkpointing=True, checkpoint_every=2)
    model = get_peft_model(session.model, session.lora_config())
    worst = _worst(session)
    rows = _rows_of(worst, sum(worst), 1000, 0)
    saved = {}
    for every in (0, 2, 1):
        with as_trained(session, model, every != 0, every=every or None):
            if every == 2:
                flags = [bool(getattr(b, "gradient_checkpointing", False)) for b in repeated_blocks(model)]
            saved[every] = saved_bytes(model, rows, session.device)
    assert sum(flags) == 2 and len(flags) == 4
    assert saved[1] < saved[2] < saved[0]
    with as_trained(session, model, True):  # the setup's own choice: every 2nd layer
        assert sum(bool(getattr(b, "gradient_checkpointing", False)) for b in repeated_blocks(model)) == 2
