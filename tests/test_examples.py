"""The scripts in examples/ run as written: a user copies them first."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_trl_sft_example_trains_a_checked_model(tmp_path):
    """examples/trl_sft.py on tiny:llama, two steps on the CPU: onboard checks it, TRL's SFTTrainer trains with the
    verified patches (apply_patches accepts the trainer's setup), the losses are finite and the adapter is saved."""
    pytest.importorskip("trl")
    out = tmp_path / "adapter"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "trl_sft.py"), "--model", "tiny:llama", "--steps", "2", "--device", "cpu",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "onboard: READY" in done.stdout and "applied: speed.packed_attention" in done.stdout
    trained = re.search(r"trained (\d+) steps, loss (\S+) -> (\S+);", done.stdout)
    assert trained, done.stdout
    assert int(trained.group(1)) == 2 and all(math.isfinite(float(trained.group(i))) for i in (2, 3))
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert "SetupMismatch" not in done.stderr
