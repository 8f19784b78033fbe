"""What a newcomer trips over first (issue 25, item 8): a typo in a model name, a path that is not there, a
deprecation warning that onboard's own calls cause, a matrix wider than the window, a row name that
`onboard check` does not take."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from onboard.cli import app
from onboard.harness.errors import BadInput
from onboard.harness.spec import ModelSpec

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _one_line_error(*args: str) -> str:
    out = runner.invoke(app, list(args))
    assert out.exit_code == 2, out.output  # BadInput
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in out.output, out.output
    return lines[0]


# ---- 1. did you mean ----------------------------------------------------------------------------------


@pytest.mark.parametrize("typed, meant", [
    ("fault:pack-cach", "did you mean fault:pack-cache?"),  # a fault of the catalog
    ("smollm", "did you mean smollm2?"),  # an embedded model
    ("config:llama3-8", "did you mean config:llama3-8b"),  # a shipped config
    ("llama", "did you mean tiny:llama?"),  # a sweep's row name: the prefix it needs
    ("pack-cache", "did you mean fault:pack-cache?"),
])
def test_a_close_model_name_gets_a_did_you_mean(typed, meant):
    assert meant in _one_line_error("check", typed)


def test_a_name_close_to_nothing_still_lists_the_forms():
    line = _one_line_error("check", "no-such-model")
    assert "unknown model 'no-such-model'" in line and "tiny:ARCH" in line and "did you mean" not in line


# ---- 2. a path that is not there --------------------------------------------------------------------


def test_a_missing_path_says_no_such_path(tmp_path):
    assert _one_line_error("check", "./no/such/folder") == "error: no such path: ./no/such/folder"
    gguf = str(tmp_path / "x.gguf")
    assert _one_line_error("check", gguf).startswith(f"error: no such path: {gguf}")
    for text in ("/no/such/dir", "~/no-such-onboard-model", "a/b/c", "missing.safetensors"):
        with pytest.raises(BadInput, match="^no such path: ") as info:
            ModelSpec.parse(text)
        assert info.value.exit_code == 2
    # a typo in the last part of a path whose folder exists: the close names there
    (tmp_path / "my-model").mkdir()
    (tmp_path / "my-model" / "config.json").write_text("{}")
    with pytest.raises(BadInput, match=re.escape(f"did you mean {tmp_path}/my-model?")):
        ModelSpec.parse(str(tmp_path / "my-modle"))
    assert ModelSpec.parse(str(tmp_path / "my-model")).target == str(tmp_path / "my-model")
    assert ModelSpec.parse("org/name").kind.value == "hub"  # a hub id is not a path


# ---- 3. tiny:ARCH is checked when it is parsed, before anything is built ------------------------------


def test_a_tiny_typo_fails_before_anything_is_built():
    from onboard.harness.session import ModelSession

    line = _one_line_error("check", "tiny:lama")
    assert "unknown architecture 'lama'" in line and "did you mean tiny:llama" in line
    out = runner.invoke(app, ["check", "tiny:lama"])
    assert "Building" not in out.output  # the progress line of a build never came
    with pytest.raises(BadInput, match="did you mean tiny:llama"):
        ModelSpec.parse("tiny:lama")
    built = []
    with pytest.raises(BadInput, match="did you mean tiny:llama"):
        ModelSession(model="tiny:lama", device="cpu", progress=built.append)
    assert built == []  # no load step was even announced
    # a checkpoint's class names, as its config.json lists them, and a capital
    for typed in ("tiny:LlamaForCausalLM", "tiny:LlamaConfig", "tiny:Llama"):
        with pytest.raises(BadInput, match=r"did you mean tiny:llama\?"):
            ModelSpec.parse(typed)
    assert ModelSpec.parse("tiny:llama").target == "llama"


# ---- 4. no deprecation warning of onboard's making (transformers 5.24: activation checkpointing) ------


def _checkpointing_warnings(caught) -> list[str]:
    return [f"{w.category.__name__}: {w.message}" for w in caught
            if issubclass(w.category, (FutureWarning, DeprecationWarning)) and "checkpointing" in str(w.message)]


def test_onboards_training_step_raises_no_checkpointing_deprecation(tmp_path):
    from transformers import TrainingArguments

    from onboard.checks.train_step import TrainStepCheck
    from onboard.harness.session import ModelSession
    from onboard.harness.training import (checkpointing_arguments, checkpointing_on, renamed_to_activation,
                                          training_arguments)
    from onboard.patches.base import unwrap

    session = ModelSession(model="tiny:llama", device="cpu", gradient_checkpointing=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = training_arguments(session, tmp_path / "args", max_steps=1)
        result = TrainStepCheck().run(session)  # TRAIN001: a Trainer step under checkpointing, then undone
    assert _checkpointing_warnings(caught) == []
    assert checkpointing_on(args) and result.status.value == "PASS", result.message
    assert result.measurements["gradient_checkpointing"].value is True
    base = unwrap(session.train_model)
    assert not getattr(base, "is_activation_checkpointing" if renamed_to_activation() else "is_gradient_checkpointing")
    # the installed transformers has the new names (5.24); the old ones are what 5.17 to 5.23 take
    assert renamed_to_activation() and set(checkpointing_arguments(True)) == {"activation_checkpointing",
                                                                              "activation_checkpointing_kwargs"}
    # and the recorder sees this kind of warning: the old name, given directly, raises it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TrainingArguments(str(tmp_path / "old"), gradient_checkpointing=True, use_cpu=True, report_to="none")
    assert any("gradient_checkpointing" in w for w in _checkpointing_warnings(caught))


# ---- 6 and 7. the matrix: fits a 1280-pixel window; its rows name what `onboard check` takes ------------


def _worst_case_rows():
    """A sweep's rows as wide as they come: every check of the checklist with the longest cell texts, a long
    reason, a long model path, and an architecture that did not build (a real sweep record)."""
    from onboard.checks import CHECKS
    from onboard.harness.result import CheckResult, FixRecord, RunReport, Status
    from onboard.reports.matrix import Row
    from onboard.sweep.worker import check_architecture

    def report(model_id: str, fixed: bool) -> RunReport:
        checks = []
        for check in CHECKS:
            c = CheckResult(check.code, check.name, Status.FAIL, "packed samples see each other " * 6,
                            diagnosis="FM-PACK-ISOLATION")
            if fixed:
                c.fix = FixRecord(patch_id="packing.no_cache_no_mask", applied=True, verified=True, message_after="ok")
            checks.append(c)
        return RunReport(model={"id": model_id}, environment={"torch": "2", "transformers": "5"}, checks=checks,
                         seed=0, options={"device": "cpu", "pack_length": 256})

    failed = check_architecture("not_an_arch")  # what the sweep records for a name transformers lacks
    long_reason = "PACK001 FM-PACK-ISOLATION " + "a_reason_without_spaces_" * 12
    folder = "/home/someone/models/a-rather-long-folder-name/of-a-checkpoint"
    return [
        Row("qwen2_5_omni_thinker", "causal-lm", "NOT_READY", long_reason, report("tiny:qwen2_5_omni_thinker", False),
            "sweep.jsonl", "tiny:qwen2_5_omni_thinker"),
        Row(folder, "", "READY_WITH_FIXES", "packing.no_cache_no_mask", report(folder, True), "run.json"),
        Row("not_an_arch", "causal-lm", failed["outcome"], failed["reason"], None, "sweep.jsonl", "tiny:not_an_arch"),
    ]


def test_the_matrix_page_is_laid_out_to_fit_1280_pixels():
    from onboard.reports.matrix import render_html

    page = render_html(_worst_case_rows())
    assert "table-layout: fixed" in page and "overflow-wrap: anywhere" in page
    widths = [float(w) for w in re.findall(r'<col style="width:([\d.]+)%">', page)]
    from onboard.checks import CHECKS

    assert len(widths) == 2 + len(CHECKS) + 1 and sum(widths) == pytest.approx(100, abs=0.1)  # model, outcome, checks, reason
    assert re.search(r"table\.matrix \.model \{ position: sticky; left: 0", page)  # the model column stays in view
    assert 'class="matrix-box"' in page  # a table wider than the window scrolls in its box, not the page
    assert "PACK<wbr>001" in page and "packing.<wbr>no_<wbr>cache_<wbr>no_<wbr>mask" in page  # cells may wrap


def _measured(page: str, folder: Path) -> dict:
    """The page in chromium at 1280 x 900: how wide the document is and where the reason column ends."""
    probe = ("<script>const r = document.querySelector('th.reason').getBoundingClientRect();"
             "document.body.setAttribute('data-probe', JSON.stringify({scroll: document.documentElement.scrollWidth,"
             " window: window.innerWidth, reason_right: r.right, reason_width: r.width}));</script>")
    path = folder / "matrix.html"
    path.write_text(page.replace("</body>", probe + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               f"--user-data-dir={profile}", "--window-size=1280,900", "--dump-dom", path.as_uri()],
                              capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'data-probe="([^"]*)"', done.stdout)
    assert found, done.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_matrix_fits_a_1280_pixel_window_in_a_browser(tmp_path):
    from onboard.reports.matrix import MATRIX_CSS, render_html

    page = render_html(_worst_case_rows())
    seen = _measured(page, tmp_path)
    assert seen["window"] == 1280
    assert seen["scroll"] <= 1280 and seen["reason_right"] <= 1280 and seen["reason_width"] >= 200, seen
    # and the measure can fail: without the matrix's layout rules the same rows are wider than the window
    # and the reason column is past its edge
    bare = _measured(page.replace(MATRIX_CSS, "").replace('style="min-width:', 'data-x="'), tmp_path)
    assert bare["scroll"] > 1280 and bare["reason_right"] > 1280, bare


def test_a_matrix_row_names_what_onboard_check_takes(tmp_path):
    """The sweep names its row `llama` (its key, kept for --diff and the page's anchors); the matrix shows
    tiny:llama, and the command that checks it again, options and all, which the CLI parses as written."""
    import shlex

    from onboard.harness.result import RunReport
    from onboard.reports.matrix import load_rows, render_html, render_markdown

    options = {"device": "cpu", "dtype": "float32", "pack_length": 256, "max_length": 2048, "lora_targets": "all-linear",
               "trainer": "hf", "gradient_checkpointing": False, "seed": 0}
    report = RunReport(model={"id": "tiny:llama", "model_type": "llama"}, environment={}, checks=[], seed=0,
                       options=options)
    sweep = tmp_path / "sweep.jsonl"
    sweep.write_text("\n".join(json.dumps(r) for r in [
        {"arch": "llama", "task": "causal-lm", "outcome": "READY", "reason": "", "report": report.to_dict()},
        {"arch": "lama", "task": "causal-lm", "outcome": "BUILD_ERROR", "reason": "unknown architecture", "report": None},
    ]) + "\n")
    rows = load_rows([sweep])
    by_name = {r.name: r for r in rows}
    assert by_name["llama"].model == "tiny:llama" and by_name["lama"].model == "tiny:lama"
    command = by_name["llama"].command
    assert command == "onboard check tiny:llama --device cpu --pack-length 256"
    assert by_name["lama"].command == "onboard check tiny:lama"
    md = render_markdown(rows)
    assert "| llama | READY |" in md and "`onboard check tiny:llama --device cpu --pack-length 256` |" in md
    page = render_html(rows)
    assert re.search(r'<td class="model" title="onboard check tiny:llama --device cpu --pack-length 256">'
                     r'<a href="#run-llama">tiny:<wbr>llama</a></td>', page)
    assert "check it again: <code>onboard check tiny:llama --device cpu --pack-length 256</code>" in page
    # what the row shows is a model `onboard check` takes, and the command's options are the CLI's own
    words = shlex.split(command)
    assert ModelSpec.parse(words[2]).display == "tiny:llama"
    check = typer.main.get_command(app).commands["check"]
    parsed = check.make_context("check", words[2:], resilient_parsing=False).params
    assert parsed["model"] == "tiny:llama" and parsed["pack_length"] == 256 and parsed["device"] == "cpu"


# ---- 8. a bad value is reported at once (a --from mismatch before the weights load: tests/test_train.py) ----


@pytest.mark.parametrize("args", [
    ["check", "tiny:llama", "--max-length", "0"],  # a Setup value
    ["check", "tiny:llama", "--data", "/no/such/chats.jsonl"],  # a data file that is not there
    ["train", "tiny:llama", "--cce", "sometimes"],  # a training option's value
    ["train", "tiny:llama", "--batch-tokens", "512", "--no-packing"],
])
def test_a_bad_value_is_one_line_before_torch_is_imported(args):
    """What can be judged without the model is judged before the heavy imports: torch is never imported, so the
    line comes in a fraction of a second instead of the 10-20 s it took."""
    code = ("import sys\nfrom onboard.cli import main\nsys.argv = ['onboard', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    print('exit', exc.code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert out.stdout.strip().endswith("exit 2 False"), (out.stdout, out.stderr)
    assert out.stderr.strip().startswith("error:") and len(out.stderr.strip().splitlines()) == 1, out.stderr
