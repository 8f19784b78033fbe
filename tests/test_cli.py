"""The command line as users and CI call it: exit codes, one-line errors, report files."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from onboard.checks import CHECKS
from typer.testing import CliRunner

from onboard.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_tiny_run_writes_every_report(tmp_path):
    out = invoke("check", "tiny:llama", "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"),
                 "--markdown", str(tmp_path / "r.md"))
    assert out.exit_code == 0, out.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["verdict"] == "READY_WITH_FIXES"
    assert [c["code"] for c in data["checks"]] == [c.code for c in CHECKS]
    pack = next(c for c in data["checks"] if c["code"] == "PACK001")
    assert pack["fix"]["patch_id"] == "packing.no_cache_no_mask" and pack["fix"]["verified"]
    assert pack["measurements"]["leak_no_mask_no_cache"]["unit"] == "nats"
    assert {"torch", "transformers", "peft", "device"} <= set(data["environment"])
    suite = ET.parse(tmp_path / "r.xml").getroot()
    assert suite.get("tests") == str(len(CHECKS)) and suite.get("failures") == "0" and suite.get("skipped") == "1"
    assert "READY_WITH_FIXES" in (tmp_path / "r.md").read_text()


def test_strict_and_no_fix_gate():
    assert invoke("check", "tiny:llama", "--strict").exit_code == 1
    assert invoke("check", "tiny:llama", "--no-fix").exit_code == 1


@pytest.mark.parametrize("args, code, words", [
    (["check", "no-such-model"], 2, "unknown model"),
    (["check", "missing.gguf"], 2, "GGUF file not found"),
    (["check", "tiny:not_an_arch"], 2, "unknown architecture"),
    (["check", "tiny:vit"], 2, "not a causal LM"),
    (["check", "tiny:llama", "--dtype", "int3"], 2, "unknown dtype"),
    (["explain", "PAKC001"], 2, "did you mean PACK001"),
])
def test_bad_input_is_one_line_and_exit_code(args, code, words):
    out = invoke(*args)
    assert out.exit_code == code
    assert words in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) <= 2


def test_malformed_data_names_the_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{oops\n')
    out = invoke("check", "tiny:llama", "--data", str(data))
    assert out.exit_code == 2 and "bad.jsonl:2" in out.output


def test_explain_and_list():
    out = invoke("explain", "packing")
    assert out.exit_code == 0 and "FM-PACK-CACHE" in out.output and "Fix:" in out.output
    assert all(code in invoke("checks").output for code in ("LOAD001", "LORA001", "LOSS001", "PACK001", "CCE001"))


def _hub_cache(root, repo="acme/tiny-llama"):
    """A local Hugging Face cache holding one model, laid out as the hub client writes it."""
    from onboard.harness.session import ModelSession

    session = ModelSession(model="tiny:llama", device="cpu")
    org, name = repo.split("/")
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = root / "hub" / f"models--{org}--{name}" / "snapshots" / commit
    session.model.save_pretrained(snapshot)
    session.tokenizer.save_pretrained(snapshot)
    refs = root / "hub" / f"models--{org}--{name}" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(commit)


def test_hub_id_loads_from_the_local_cache_offline(tmp_path):
    _hub_cache(tmp_path)
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "onboard.cli", "check", "acme/tiny-llama", "--json", "-"],
                          capture_output=True, text=True, env=env)
    report = json.loads(done.stdout)
    assert report["model"]["source"] == "hub" and report["model"]["class"] == "LlamaForCausalLM"
    # the cached "pretrained" model holds random weights, and the checklist says so
    loss = next(c for c in report["checks"] if c["code"] == "LOSS001")
    assert loss["diagnosis"] == "FM-LOSS-RANDOM"
    assert done.returncode == 1, done.stderr[-2000:]

    done = subprocess.run([sys.executable, "-m", "onboard.cli", "check", "acme/not-cached"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 3
    assert "not in the local Hugging Face cache" in done.stderr and "Traceback" not in done.stderr
