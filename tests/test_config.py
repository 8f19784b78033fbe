"""Config files: thresholds and options from onboard.toml / [tool.onboard], an axolotl config as the setup
to check, and the step summary GitHub Actions shows."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onboard.cli import app
from onboard.config import discover_config, load_config
from onboard.harness.errors import BadInput
from onboard.harness.thresholds import DEFAULTS, Thresholds

runner = CliRunner()


def invoke(*args, env=None):
    return runner.invoke(app, list(args), env=env)


def checks_of(path):
    return {c["code"]: c for c in json.loads(Path(path).read_text())["checks"]}


def test_thresholds_defaults_overrides_and_dtypes():
    t = Thresholds({"packing": {"tolerance": 0.5}, "train_step.loss_rtol": {"bfloat16": 0.1}})
    assert t.get("packing.tolerance", "float32") == 0.5 == t.get("packing.tolerance", "bfloat16")
    assert t.get("train_step.loss_rtol", "bfloat16") == 0.1
    assert t.get("train_step.loss_rtol", "float32") == DEFAULTS["train_step.loss_rtol"].default["float32"]
    resolved = t.resolved("float32")
    assert set(resolved) == set(DEFAULTS)
    assert resolved["packing.tolerance"]["overridden"] and not resolved["cce.loss_rtol"]["overridden"]
    with pytest.raises(BadInput, match="did you mean packing.tolerance"):
        Thresholds({"packing.tolerence": 1})
    with pytest.raises(BadInput, match="non-negative number"):
        Thresholds({"packing.tolerance": "big"})


def test_config_from_toml_overrides_thresholds_and_shows_them(tmp_path, monkeypatch):
    """A tolerance loose enough to hide tiny Llama's packing leak turns READY_WITH_FIXES into READY: the
    checks judge against the config's number, and every report says which numbers were used."""
    (tmp_path / "onboard.toml").write_text(
        'model = "tiny:llama"\npack-length = 256\ntrainer = "custom"\n[thresholds]\npacking.tolerance = 1.0\n'
        'train_step.loss_rtol = {float32 = 1e-3}\n')
    monkeypatch.chdir(tmp_path)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    out = invoke("check", "--json", "r.json", "--junit", "r.xml", "--markdown", "r.md",
                 env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert out.exit_code == 0, out.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["verdict"] == "READY" and data["model"]["id"] == "tiny:llama"
    assert data["options"]["pack_length"] == 256
    assert data["config"]["path"].endswith("onboard.toml")
    assert data["thresholds"]["packing.tolerance"] == {**data["thresholds"]["packing.tolerance"], "value": 1.0,
                                                       "overridden": True}
    assert data["thresholds"]["train_step.loss_rtol"]["value"] == 1e-3
    pack = next(c for c in data["checks"] if c["code"] == "PACK001")
    assert pack["status"] == "PASS" and pack["measurements"]["leak_no_mask_default_cache"]["value"] > 1e-2
    assert pack["measurements"]["leak_no_mask_default_cache"]["threshold"] == "<= 1"
    assert "packing.tolerance | 1 | nats | config" in (tmp_path / "r.md").read_text()
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "r.xml").getroot().find("properties")}
    assert props["threshold.packing.tolerance"] == "1 nats" and props["verdict"] == "READY"
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "## onboard check `tiny:llama`: **READY**" in text
    assert "packing.tolerance 1*" in " ".join(out.output.split())  # the terminal report too


def test_pyproject_tool_table_is_found(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert discover_config(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text(
        '[tool.onboard]\nmodel = "tiny:qwen2"\nstrict = true\nlora_targets = ["q_proj", "v_proj"]\n'
        'data = "chats.jsonl"\nskip = {cce = "we train without CCE"}\n[tool.onboard.thresholds]\n'
        'packing.tolerance = 0.01\n')
    cfg = load_config(discover_config(tmp_path))
    assert cfg.options == {"model": "tiny:qwen2", "strict": True, "lora_targets": ("q_proj", "v_proj"),
                           "data": str(tmp_path / "chats.jsonl")}
    assert cfg.thresholds == {"packing": {"tolerance": 0.01}}
    assert cfg.not_applicable == {"CCE001": "we train without CCE"}


@pytest.mark.parametrize("text, words", [
    ('modle = "tiny:llama"\n', "unknown option 'modle'; did you mean model?"),
    ("max_length = 'long'\n", "max_length must be a int"),
    ("[thresholds]\npacking.tol = 1\n", "unknown threshold 'packing.tol'; did you mean packing.tolerance?"),
    ("model = \n", "not valid TOML"),
    ('skip = {PAKC001 = "x"}\n', "did you mean PACK001"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, text, words):
    (tmp_path / "onboard.toml").write_text(text)
    out = invoke("check", "tiny:llama", "--config", str(tmp_path / "onboard.toml"))
    assert out.exit_code == 2, out.output
    assert words in " ".join(out.output.split()) and "Traceback" not in out.output


AXOLOTL = """
base_model: {model}
adapter: lora
lora_r: 4
lora_alpha: 8
lora_dropout: 0.05
lora_target_modules:
  - q_proj
  - v_proj
sample_packing: false
sequence_len: 256
attn_implementation: eager
bf16: auto
gradient_accumulation_steps: 4
micro_batch_size: 2
learning_rate: 0.0002
wandb_project: demo
plugins:
  - axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin
cut_cross_entropy: true
datasets:
  - path: chats.jsonl
    type: chat_template
my_own_field: 1
"""


def test_axolotl_fields_map_to_the_setup(tmp_path):
    (tmp_path / "chats.jsonl").write_text("")
    path = tmp_path / "axolotl.yml"
    path.write_text(AXOLOTL.format(model="HuggingFaceTB/SmolLM2-135M"))
    cfg = load_config(path)
    assert cfg.kind == "axolotl"
    assert cfg.options == {"model": "HuggingFaceTB/SmolLM2-135M", "lora_targets": "q_proj,v_proj", "lora_rank": 4,
                           "lora_alpha": 8, "max_length": 256, "pack_length": 256, "attn": "eager",
                           "data": str(tmp_path / "chats.jsonl")}
    assert set(cfg.not_applicable) == {"PACK001"}  # packing off; CCE on; GA 4
    notes = " ".join(cfg.notes)
    assert "my_own_field" in notes and "lora_dropout 0.05" in notes and "learning_rate" not in notes


@pytest.mark.parametrize("change, words", [
    ({"sample_packin": True}, "unknown field 'sample_packin': did you mean sample_packing?"),
    ({"flash_attention": True}, "contradictory attention settings"),
    ({"adapter": "qlora"}, "adapter qlora needs load_in_4bit: true"),
    ({"plugins": []}, "cut_cross_entropy: true needs the plugin"),
    ({"sample_packing": "sometimes"}, "sample_packing must be true or false"),
    ({"adapter": None}, "no adapter: this config trains every weight"),
    ({"lora_target_modules": None}, "no LoRA targets"),
    ({"bf16": True, "fp16": True}, "bf16 and fp16 are both true"),
    ({"base_model": None}, "base_model is missing"),
])
def test_axolotl_unknown_or_contradictory_fields_are_one_line(tmp_path, change, words):
    import yaml

    fields = {**yaml.safe_load(AXOLOTL.format(model="org/m")), **change}
    (tmp_path / "axolotl.yml").write_text(yaml.safe_dump({k: v for k, v in fields.items() if v is not None}))
    out = invoke("check", "--config", str(tmp_path / "axolotl.yml"))
    assert out.exit_code == 2, out.output
    assert words in " ".join(out.output.split()) and "Traceback" not in out.output


def test_axolotl_config_checks_that_setup(tmp_path, monkeypatch):
    """A real (tiny) model folder trained as the axolotl file says: LoRA rank 4 on q/v only, eager attention,
    no packing (PACK001 not applicable), CCE on, GA 4."""
    from onboard.harness.session import ModelSession

    session = ModelSession(model="tiny:llama", device="cpu")
    session.model.save_pretrained(tmp_path / "model")
    session.tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "chats.jsonl").write_text(
        "".join(json.dumps({"messages": [{"role": "user", "content": f"Say {w}."},
                                         {"role": "assistant", "content": f"{w} {w} {w}."}]}) + "\n"
                for w in ("apple", "river", "stone", "cloud", "maple")))
    (tmp_path / "axolotl.yml").write_text(AXOLOTL.format(model="./model"))
    monkeypatch.chdir(tmp_path)
    out = invoke("check", "--config", "axolotl.yml", "--json", "r.json")
    checks = checks_of(tmp_path / "r.json")
    assert checks["PACK001"]["status"] == "SKIP" and "sample_packing is off" in checks["PACK001"]["message"]
    assert checks["LORA001"]["measurements"]["target_modules"]["value"] == "q_proj, v_proj"
    assert checks["LORA001"]["measurements"]["wrapped_attention"]["value"] == 4  # 2 layers x q, v
    # rank 4 on q (64 -> 64) and v (64 -> 2 kv heads x 16) of 2 layers
    assert checks["LORA001"]["measurements"]["trainable_params"]["value"] == 2 * 4 * ((64 + 64) + (64 + 32))
    assert checks["ATTN001"]["measurements"]["backend"]["value"] == "eager"
    assert checks["CCE001"]["status"] == "PASS" and checks["GA001"]["status"] == "PASS"
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["model"]["examples"] == 5 and data["options"]["max_length"] == 256
    assert data["config"]["kind"] == "axolotl" and "not applicable" in out.output
    # random weights saved as a "pretrained" model: LOSS001 says so, and the run is not ready
    assert checks["LOSS001"]["diagnosis"] == "FM-LOSS-RANDOM" and out.exit_code == 1


@pytest.mark.parametrize("value, wanted, noted", [("true", True, False), ("false", False, False),
                                                  ("unsloth", True, True)])
def test_axolotl_gradient_checkpointing_is_the_setups(tmp_path, value, wanted, noted):
    """gradient_checkpointing changes the step TRAIN001 runs: read from the axolotl config into the Setup."""
    from onboard.harness.setup import Setup

    (tmp_path / "chats.jsonl").write_text("")
    path = tmp_path / "axolotl.yml"
    path.write_text(AXOLOTL.format(model="tiny:llama") + f"gradient_checkpointing: {value}\n")
    cfg = load_config(path)
    assert cfg.options["gradient_checkpointing"] is wanted
    assert any("gradient_checkpointing" in n for n in cfg.notes) is noted
    assert Setup.build(str(path), **cfg.setup_options()).gradient_checkpointing is wanted


@pytest.mark.parametrize("value, wanted", [("true", True), ("false", False), ("auto", None)])
def test_axolotl_torch_compile_decides_whether_the_compiled_step_is_checked(tmp_path, value, wanted):
    from onboard.harness.setup import Setup

    (tmp_path / "chats.jsonl").write_text("")
    path = tmp_path / "axolotl.yml"
    path.write_text(AXOLOTL.format(model="tiny:llama") + f"torch_compile: {value}\n")
    cfg = load_config(path)
    assert cfg.options.get("torch_compile") is wanted
    assert Setup.build(str(path), **cfg.setup_options()).torch_compile is wanted
