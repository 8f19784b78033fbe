"""COMPILE001: the training step under torch.compile on real tiny models (CPU: dynamo + AOTAutograd)."""

from conftest import by_code, make_session
from onboard.checks import CompileCheck, LoraCheck, PackingCheck
from onboard.harness.result import Status
from onboard.harness.runner import run_checks
from onboard.patches import ids


def _compile_check(spec: str, **options):
    session = make_session(spec, **options)
    report = run_checks(session, [LoraCheck, PackingCheck, CompileCheck])
    return session, by_code(report)["COMPILE001"]


def test_a_healthy_model_compiles_in_one_graph_with_eager_math():
    """Stock tiny Llama with LoRA and the packing fix: one graph, one dynamic recompile for the second row length,
    nothing new for the third, and the compiled step's loss and adapter gradients exactly eager's (aot_eager)."""
    _, check = _compile_check("tiny:llama", torch_compile=True)
    assert check.status is Status.PASS, check.message
    m = check.measurements
    assert m["graph_breaks"].value == 0 and m["recompiles_third_length"].value == 0
    assert m["graphs"].value[0] == 1 and len(set(m["row_lengths"].value)) == 3
    assert m["compiled.loss_rel_diff"].value == 0.0 and m["compiled.grad_rel_diff"].value == 0.0


def test_under_checkpointing_the_step_compiles_checkpointed_and_exact():
    """The setup checkpoints (as on CUDA by default): the compiled step runs with every decoder layer checkpointed,
    as training does, in one graph with eager's math. transformers' input-grad hook on the embeddings is left out
    (non-reentrant checkpointing does not need it; with it, 6 breaks on this model, none of them the model's)."""
    _, check = _compile_check("tiny:llama", torch_compile=True, gradient_checkpointing=True)
    m = check.measurements
    assert check.status is Status.PASS, check.message
    assert m["gradient_checkpointing"].value is True
    assert m["graph_breaks"].value == 0 and m["graphs"].value[0] == 1
    assert m["compiled.loss_rel_diff"].value == 0.0 and m["compiled.grad_rel_diff"].value == 0.0


def test_onboards_own_packing_fix_does_not_break_the_graph():
    """Stock OPT needs packing.block_mask (its mask ignores position_ids). The first compile sweep blamed OPT, GPT-OSS,
    BERT and BigBird for graph breaks that were onboard's own: the fix's pre-hook tested the positions with
    `.item()`. Under compilation it now builds the mask without a data-dependent test: no break, eager's math."""
    session, check = _compile_check("tiny:opt", torch_compile=True)
    assert ids.PACKING_BLOCK_MASK in session.applied
    assert check.status is Status.PASS, check.message
    assert check.measurements["graph_breaks"].value == 0
    assert check.measurements["compiled.grad_rel_diff"].value == 0.0


def test_the_cpu_compiles_only_when_asked():
    _, check = _compile_check("tiny:llama")
    assert check.status is Status.SKIP and "--torch-compile" in check.message


def test_regional_compilation_is_judged_when_it_is_the_setup():
    """With speed.compiled_layers applied (here a CPU instance compiling with aot_eager), the check judges the
    regionally compiled model as it is, counting its graphs and breaks and comparing its math with eager's.
    (fault:compile-breaks, compile-math and compile-fail run in tests/test_faults.py.)"""
    from onboard.patches.speed import CompiledLayersPatch

    session = make_session("tiny:llama", torch_compile=True)
    run_checks(session, [LoraCheck, PackingCheck])
    patch = CompiledLayersPatch(devices=("cpu",), backend="aot_eager")
    session.apply_patch(patch)
    check = CompileCheck().run(session)
    assert check.measurements["mode"].value.startswith("decoder layers"), check.measurements["mode"]
    assert check.status is Status.PASS, check.message
    assert check.measurements["graph_breaks"].value == 0
    session.revert_patch(ids.SPEED_COMPILED_LAYERS)


def test_the_recompile_limit_is_a_finding_not_terminal_noise(capfd):
    """Tiny Qwen3-MoE with LoRA on its experts (PEFT target_parameters registers a parametrization inside each
    forward): whole-model compile breaks in every MoE layer and hits torch's recompile limit, after which that
    frame runs eagerly without a word. The check says so; torch's own warning does not reach the terminal."""
    _, check = _compile_check("tiny:qwen3_moe", torch_compile=True)
    assert check.diagnosis == "FM-COMPILE-BREAKS", check.message
    assert "recompile limit" in check.message and "recompile_limit" in check.evidence["recompile_limit"]
    assert "parametrize.py" in check.evidence["graph_breaks"][0]["at"]
    assert "recompile_limit" not in capfd.readouterr().err
