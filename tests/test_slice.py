"""The layer-complete slice (onboard.harness.slice): built on real tiny architectures of every layer-kind mix the
sweep holds, shown to be the model's own layers, and changing no verdict."""

from __future__ import annotations

import pytest
import torch

from conftest import by_code, make_session, run_all
from onboard.harness.slice import NoSlice, build_slice, layer_kinds, layer_stack

# (tiny model with more layers than its slice keeps, the kinds the slice must keep, the layers it keeps)
MIXES = [
    ("tiny:llama:6", 1, [0, 1]),  # one kind: its first two layers
    ("tiny:gemma3_text:8", 2, [0, 1, 5]),  # sliding and full attention, five to one
    ("tiny:qwen3_next:6", 2, [0, 1, 3]),  # hybrid: linear attention (gated delta net) and full attention
    ("tiny:deepseek_v3:6", 2, [0, 1, 2]),  # MoE after a first dense layer (first_k_dense_replace)
    ("tiny:jamba:10", 3, [0, 1, 2, 3, 4]),  # mamba with dense and MoE MLPs, attention every eighth
    ("tiny:smollm3:8", 2, [0, 1, 3, 7]),  # NoPE every fourth layer (no_rope_layers)
]


@pytest.fixture(scope="module")
def sessions():
    return {}


def _session(sessions, name):
    if name not in sessions:
        sessions[name] = make_session(name, slice="off")
    return sessions[name]


@pytest.mark.parametrize("name,kinds,kept", MIXES, ids=[m[0] for m in MIXES])
def test_slice_keeps_two_of_each_kind_with_the_models_weights(sessions, name, kinds, kept):
    session = _session(sessions, name)
    model = session.model
    sigs, labels = layer_kinds(model)
    assert len(set(sigs)) == kinds
    part, info = build_slice(model, session.probe_batch(1)["input_ids"], session.device)
    assert info.kept == kept and info.how == "two of each kind"
    assert {sigs[i] for i in info.kept} == set(sigs)  # every kind the model has
    assert all(sum(1 for i in info.kept if sigs[i] == s) == min(2, sigs.count(s)) for s in set(sigs))
    # the same class, its config cut to the kept layers
    assert type(part) is type(model)
    stack_path, stack, text = layer_stack(part)
    assert len(stack) == len(kept) and text.num_hidden_layers == len(kept)
    whole_text = layer_stack(model)[2]
    for key in ("layer_types", "no_rope_layers"):
        if isinstance(getattr(whole_text, key, None), list):
            assert getattr(text, key) == [getattr(whole_text, key)[i] for i in kept]
    # every tensor is the model's own: the kept layers' renumbered, the rest as they are
    own = model.state_dict()
    for name_, tensor in part.state_dict().items():
        j = name_.removeprefix(stack_path + ".").split(".")[0]
        source = name_.replace(f"{stack_path}.{j}.", f"{stack_path}.{kept[int(j)]}.", 1) if name_.startswith(stack_path + ".") else name_
        assert torch.equal(tensor, own[source]), name_
    # a clean null: the hidden states after the first kept layers are the model's, exactly
    assert info.hidden_diff == 0.0 and info.compared_layers >= 1


def test_a_slice_that_would_keep_every_layer_is_not_built():
    session = make_session("tiny:llama")  # two layers of one kind: the slice would be the model
    assert session.slice_model is None and "keeps every layer" in session.slice_reason
    assert not session.slice_refused  # nothing refused: the CLI says nothing about it


def test_a_layer_index_the_slice_cannot_renumber_refuses_it():
    # Gemma 3n's per-layer input embeddings are one tensor for all layers (layers x width columns) and its last
    # layers reuse an earlier layer's keys and values: cutting the config does not cut them, so no slice
    session = make_session("tiny:gemma3n_text:8")
    assert session.slice_model is None
    assert "embed_tokens_per_layer" in session.slice_reason or "tensor" in session.slice_reason


def test_a_hook_planted_on_a_layer_keeps_the_check_on_the_whole_model():
    # a fault planted with a forward hook (as fault:row-samples-bias plants its own): a slice built from the config
    # would not carry it, so none is built and every check sees the hook
    session = make_session("tiny:llama:4", slice="off")
    model = session.model
    hook = model.model.layers[2].self_attn.q_proj.register_forward_hook(_scale_for_test)
    try:
        with pytest.raises(NoSlice, match="not of the kind"):
            build_slice(model, session.probe_batch(1)["input_ids"], session.device)
    finally:
        hook.remove()


def _scale_for_test(_module, _args, out):
    return out * 1.5


@pytest.fixture(scope="module")
def biogpt_reports():
    """A model whose packing needs a fix (its learned positions: packing.block_mask), checked on its slice and whole."""
    return {mode: run_all(make_session("tiny:biogpt:6", slice=mode, pack_length=256)) for mode in ("auto", "off")}


def test_the_slice_changes_no_verdict_and_the_fix_trains_the_whole_model(biogpt_reports):
    sliced, whole = biogpt_reports["auto"], biogpt_reports["off"]
    assert sliced.verdict == whole.verdict
    assert [(c.code, c.status, c.diagnosis, c.fixed) for c in sliced.checks] == \
           [(c.code, c.status, c.diagnosis, c.fixed) for c in whole.checks]
    assert sliced.verified_patches == whole.verified_patches
    where = {c.code: c.ran_on for c in sliced.checks if c.ran_on}
    assert where["LOAD001"] == where["LOSS001"] == where["TRAIN001"] == where["LORA001"] == "whole"
    assert where["PACK001"] == where["ATTN001"] == where["GA001"] == "slice"
    assert {c.ran_on for c in whole.checks if c.ran_on} == {"whole"}
    # the packing fix PACK001 verified on the slice is what TRAIN001's step on the whole model trained with
    assert by_code(sliced)["PACK001"].fixed and by_code(sliced)["TRAIN001"].status.value == "PASS"
    assert sliced.model["slice"]["kept"] == [0, 1] and whole.model["slice"] == {
        "reason": "--slice off: every check ran on the whole model"}


def test_reports_say_where_each_check_ran(biogpt_reports, tmp_path):
    from rich.console import Console

    from onboard.harness.result import RunReport
    from onboard.reports import html, markdown, terminal

    report = biogpt_reports["auto"]
    again = RunReport.from_dict(report.to_dict())
    assert [c.ran_on for c in again.checks] == [c.ran_on for c in report.checks]
    text = report.slice_text
    assert "layers" in text and "of 6" in text and "PACK001" in text and "whole model" in text
    assert "| ran on |" in markdown.render(report) and text in markdown.render(report)
    assert "<th>ran on</th>" in html.render(report)
    console = Console(record=True, width=200)
    terminal.render(report, console)
    shown = console.export_text()
    assert "ran on" in shown and "Layer-complete slice" in shown
    line = terminal.check_line(by_code(report)["PACK001"]).plain
    assert "slice · " in line


def test_moving_between_slice_and_whole_carries_the_patches_and_the_adapter():
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer

    from onboard.patches import get_patch

    session = make_session("tiny:llama:6")
    assert session.use("slice") == "slice" and session.model is session.slice_model
    session.set_adapter(get_peft_model(session.model, session.lora_config()))
    on_slice = session.peft_model
    session.apply_patch(get_patch("labels.shift"))
    session.use("whole")
    assert session.model is session.whole_model and list(session.applied) == ["labels.shift"]
    wrapped = [m for m in session.train_model.modules() if isinstance(m, LoraLayer)]
    assert len(wrapped) == 6 * 7  # every linear of six layers: an adapter built on the whole model
    on_whole = session.peft_model
    session.use("slice")
    assert list(session.applied) == ["labels.shift"]
    assert session.peft_model is on_slice  # the slice's adapter was parked, not rebuilt
    session.use("whole")
    assert session.peft_model is on_whole
    session.release_slice()  # training: the whole model bare, no adapter, nothing applied
    assert session.model is session.whole_model and session.slice_model is None and not session.applied
    assert session.peft_model is None and not any(isinstance(m, LoraLayer) for m in session.whole_model.modules())


def test_tiny_layer_count_is_part_of_the_name():
    from onboard.harness.errors import BadInput
    from onboard.harness.spec import ModelSpec

    assert ModelSpec.parse("tiny:llama:6").target == "llama:6"
    assert ModelSpec.parse("tiny:llama:6").display == "tiny:llama:6"
    with pytest.raises(BadInput, match="positive integer"):
        ModelSpec.parse("tiny:llama:six")


def test_a_slice_is_built_from_a_model_on_the_meta_device():
    """A config-shaped model too large for the card is built on the meta device (no memory) and only its slice on the
    card, with its own random weights: the same kinds and config cut, nothing to compare hidden states with."""
    from transformers import AutoModelForCausalLM

    session = make_session("tiny:gemma3_text:8", slice="off")
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(session.model.config)
    part, info = build_slice(meta, session.probe_batch(1)["input_ids"], session.device, weights="random")
    assert info.kept == [0, 1, 5] and info.hidden_diff is None and info.compared_layers == 0
    assert all(p.device.type == "cpu" for p in part.parameters())
    out = part(**session.probe_batch(1))
    assert torch.isfinite(out.loss)


def test_slice_only_reads_the_kept_layers_from_the_checkpoint(tmp_path):
    """--slice only (what a model too large for the card gets on CUDA): the whole model is built on the meta device,
    the slice's layers are read from the checkpoint (layer 5 of the checkpoint is the slice's layer 2), and the
    checks that need the whole model say why they did not run."""
    whole = make_session("tiny:gemma3_text:8", slice="off")
    whole.model.save_pretrained(tmp_path)
    whole.tokenizer.save_pretrained(tmp_path)
    session = make_session(str(tmp_path), slice="only")
    assert session.whole_model.device.type == "meta" and session.model is session.slice_model
    assert session.slice_map.kept == [0, 1, 5] and session.slice_map.hidden_diff is None
    saved = whole.model.state_dict()
    for name, tensor in session.slice_model.state_dict().items():
        source = name.replace("model.layers.2.", "model.layers.5.")
        assert torch.equal(tensor, saved[source]), name
    report = run_all(session)
    checks = by_code(report)
    assert checks["TRAIN001"].status.value == "SKIP" and "--slice only" in checks["TRAIN001"].message
    assert checks["LOSS001"].status.value == "SKIP"
    assert checks["PACK001"].ran_on == "slice" and checks["LOAD001"].ran_on == "slice"
    assert checks["LOAD001"].measurements["parameters"].value == sum(p.numel() for p in whole.model.parameters())
    assert not any(c.blocking for c in report.checks), report.reason


def test_a_slice_whose_hidden_states_are_not_the_models_is_refused():
    """MLlama's text model names its cross-attention layers by index (cross_attention_layers); the prefix slice
    keeps their modules, but with the config cut the hidden states after the kept layers differ from the model's
    (by whole units): the clean null refuses the slice, and every check runs on the whole model."""
    session = make_session("tiny:mllama:6")
    assert session.slice_model is None and session.slice_refused  # the CLI says so, with the reason
    assert "hidden states after layer" in session.slice_reason and "differ from the model's" in session.slice_reason
