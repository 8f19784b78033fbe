"""No false alarms: the structural checks on tiny random configs of causal-LM architectures from
transformers. Each passes, or fails only with a verified fix; the few with a real upstream problem
are listed with the exact finding the report must give."""

import pytest

from conftest import by_code, make_session, run_all
from onboard.harness.result import Status

CLEAN = [
    "qwen3", "qwen3_moe", "mixtral", "gemma", "gemma2", "gemma3", "gemma4", "phi", "phi3", "starcoder2",
    "gpt2", "gpt_neox", "olmo2", "cohere", "granite", "stablelm", "olmoe", "ernie4_5", "exaone4", "apertus",
    "arcee", "glm4", "smollm3", "deepseek_v3",
]  # llama, mistral, qwen2, gemma3_text: test_checks_tiny.py
# architecture -> {check code: failure mode} that transformers 5.17 / PEFT 0.21 really have
UPSTREAM = {
    # Falcon builds its causal mask without position_ids: packed samples leak in every convention, and
    # the packed training step misses the samples' loss
    "falcon": {"PACK001": "FM-PACK-ISOLATION", "TRAIN001": "FM-TRAIN-LOSS"},
    # GPT-OSS: the same mask, and fused experts that PEFT 0.21's all-linear leaves out
    "gpt_oss": {"LORA001": "FM-LORA-EXPERTS", "PACK001": "FM-PACK-ISOLATION", "TRAIN001": "FM-TRAIN-LOSS"},
    # Granite-MoE and Qwen2-MoE: all-linear leaves their fused experts out
    "granitemoe": {"LORA001": "FM-LORA-EXPERTS"},
    "qwen2_moe": {"LORA001": "FM-LORA-EXPERTS"},
}


@pytest.mark.slow
@pytest.mark.parametrize("arch", CLEAN + sorted(UPSTREAM))
def test_structural_checks_raise_no_false_alarm(arch):
    report = run_all(make_session(f"tiny:{arch}"))
    checks = by_code(report)
    expected = UPSTREAM.get(arch, {})
    assert checks["LOSS001"].status is Status.SKIP  # random weights: says so rather than fail
    for code, check in checks.items():
        if code in expected:
            assert check.diagnosis == expected[code], (code, check.status, check.message)
            continue
        assert check.status is not Status.ERROR, (code, check.message, check.evidence.get("traceback"))
        if check.status is Status.FAIL:
            assert check.fix is not None and check.fix.verified, (code, check.message, check.fix)
        if check.status is Status.WARN:
            assert code == "LOAD001", (code, check.message)  # only "no chat template"-style notes
    if not expected:
        assert report.exit_code() == 0
