"""FSDP001 and its probe: real models sharded with PyTorch FSDP2 over 2 processes (torchrun, gloo on the CPU)
against one process."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import by_code, make_session
from onboard.checks import FsdpCheck, LoraCheck, PackingCheck
from onboard.harness.result import Status
from onboard.harness.runner import run_checks

pytestmark = pytest.mark.slow


def test_a_healthy_model_shards_exactly():
    """Tiny Llama over 2 gloo processes, one unit per decoder layer: the step's loss, every adapter gradient, the AdamW
    update and the logits of the adapter saved from the shards and loaded in one process are exactly one process's."""
    fsdp = by_code(run_checks(make_session("tiny:llama", nproc=2), [LoraCheck, PackingCheck, FsdpCheck]))["FSDP001"]
    ms = fsdp.measurements
    assert fsdp.status is Status.PASS, fsdp.message
    assert ms["world_size"].value == 2 and ms["backend"].value == "gloo"
    assert ms["wrap_classes"].value == ["LlamaDecoderLayer"] and ms["units"].value == 3
    for key in ("loss_rel_diff", "grad_rel_diff", "update_rel_diff", "logits_rel_diff_single", "saved_logits_rel_diff"):
        assert ms[key].value == 0.0, key
    assert ms["grads_on_every_rank"].value is True


def test_tied_embeddings_stay_tied_when_sharded():
    """SmolLM2 (real weights) ties its head to its embeddings: one parameter after sharding too."""
    fsdp = by_code(run_checks(make_session("smollm2", nproc=2, max_length=128), [LoraCheck, FsdpCheck]))["FSDP001"]
    assert fsdp.status is Status.PASS, fsdp.message
    assert fsdp.measurements["tied_after_sharding"].value is True
    assert fsdp.measurements["grad_rel_diff"].value == 0.0


def test_one_process_is_not_sharded():
    fsdp = FsdpCheck().run(make_session("tiny:llama"))
    assert fsdp.status is Status.SKIP and "--nproc" in fsdp.message


def test_check_nproc_on_the_command_line(tmp_path):
    from onboard.cli import app

    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["check", "fault:fsdp-wrap", "--nproc", "2", "--json", str(out), "-q"])
    report = json.loads(out.read_text())
    fsdp = next(c for c in report["checks"] if c["code"] == "FSDP001")
    assert fsdp["diagnosis"] == "FM-FSDP-WRAP" and fsdp["fix"]["verified"], fsdp
    assert report["options"]["nproc"] == 2 and result.exit_code == 0, result.output


def test_train_on_two_processes_is_the_one_process_run(tmp_path):
    """`onboard train --nproc 2` relaunches itself under torchrun (gloo processes on the CPU, where accelerate runs
    DDP): one run folder, one report and one adapter, and every step's loss is both processes' together. With 8
    samples per process per step it trains what one process does with 16: the same losses, step by step."""
    import subprocess
    import sys

    def run(out, *extra):
        cmd = [sys.executable, "-m", "onboard.cli", "train", "tiny:llama", "--max-steps", "3", "--out", str(out), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads((out / "train_report.json").read_text()), proc.stderr

    two, said = run(tmp_path / "two", "--nproc", "2", "--batch-size", "8")
    one, _ = run(tmp_path / "one", "--batch-size", "16")
    assert "launching 2 processes" in said and said.count("trained 3 steps") == 1
    assert two["processes"]["world_size"] == 2 and one["processes"]["world_size"] == 1
    losses = lambda out: [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)
    assert (tmp_path / "two" / "adapter" / "adapter_model.safetensors").exists()


def test_an_adapter_without_gradient_in_one_process_is_not_owed_one_sharded():
    """Jamba's dt_proj adapters get no gradient on the CPU's slow Mamba path, in one process as sharded (its weight
    is read without calling the module: LORA001's matter). FSDP001 owes a gradient on every rank only to what gets
    one in one process, and an empty shard of a small weight needs none: Jamba shards exactly."""
    fsdp = by_code(run_checks(make_session("tiny:jamba", nproc=2), [LoraCheck, FsdpCheck]))["FSDP001"]
    assert fsdp.status is Status.PASS, fsdp.message
    assert fsdp.measurements["grads_on_every_rank"].value is True
    assert fsdp.measurements["grad_rel_diff"].value == 0.0
