"""MOE001 and moe.experts_implementation: the fused experts' kernels checked against eager, on real tiny MoE
architectures; the planted kernels found; the chosen kernel is the one training runs."""

import json

import pytest
from typer.testing import CliRunner

from conftest import by_code, make_session
from onboard.checks import LoraCheck, MoeCheck, PackingCheck
from onboard.cli import app
from onboard.harness.result import Status
from onboard.harness.runner import run_checks
from onboard.patches import ids
from onboard.patches.moe import current

runner = CliRunner()


def _moe_check(spec: str, **options):
    session = make_session(spec, **options)
    report = run_checks(session, [LoraCheck, PackingCheck, MoeCheck])
    return session, by_code(report)["MOE001"]


@pytest.mark.parametrize("arch", ["qwen3_moe", "mixtral", "deepseek_v3", "qwen2_moe", "gpt_oss"])
def test_every_implementation_gives_eager_math_on_stock_moe(arch):
    """No false alarm: transformers' own kernels give eager's loss and adapter gradients (fp32, CPU) on every
    tiny MoE architecture, the adapters on the experts included; the model keeps the implementation it loaded
    with, and the check leaves the adapter as it found it (Qwen2-MoE and GPT-OSS get one for the check)."""
    session, check = _moe_check(f"tiny:{arch}")
    trainable = {n for n, p in session.train_model.named_parameters() if p.requires_grad}
    assert check.status is Status.PASS, check.message
    m = check.measurements
    for name in ("batched_mm", "grouped_mm"):
        assert m[f"{name}.loss_rel_diff"].value <= m[f"{name}.loss_rel_diff"].limit
        assert m[f"{name}.grad_rel_diff"].value <= m[f"{name}.grad_rel_diff"].limit
    assert m["experts_reached_min"].value >= 1
    assert m["chosen"].value == m["implementation_in_use"].value == current(session.train_model) == "grouped_mm"
    assert check.enables is None and not check.evidence.get("experts_without_adapter_gradient")
    expected = "added for the check" if arch in ("qwen2_moe", "gpt_oss") else "training's LoRA"
    assert m["expert_lora"].value == expected
    assert {n for n, p in session.train_model.named_parameters() if p.requires_grad} == trainable
    assert not any("onboard_experts" in n for n in trainable)


def test_dense_model_is_skipped_with_the_reason():
    _, check = _moe_check("tiny:llama")
    assert check.status is Status.SKIP and "no experts module" in check.message


def test_the_kernel_in_use_is_compared_not_trusted():
    """fault:moe-kernel: grouped_mm (what the model loads with) takes the square gate_up_proj for transposed.
    The loss moves, eager and batched_mm agree; the fix switches the model to a verified kernel."""
    session, check = _moe_check("fault:moe-kernel")
    assert check.status is Status.FAIL and check.diagnosis == "FM-MOE-KERNEL", check.message
    m = check.measurements
    assert m["grouped_mm.grad_rel_diff"].value > 100 * m["grouped_mm.grad_rel_diff"].limit
    assert m["batched_mm.grad_rel_diff"].value <= m["batched_mm.grad_rel_diff"].limit
    assert check.fix.verified and session.patch_options[ids.MOE_EXPERTS_IMPLEMENTATION] == "eager"
    assert current(session.train_model) == "eager"


def test_an_expert_whose_adapter_never_learns_is_named():
    """fault:moe-lora: the kernel's tail path drops the last expert's weight gradient. The loss is eager's; the
    module as a whole still gets gradients (LORA001 passes); the expert that got tokens and no adapter gradient
    is named, and only that one."""
    session = make_session("fault:moe-lora")
    report = run_checks(session, [LoraCheck, PackingCheck, MoeCheck])
    check = by_code(report)["MOE001"]
    assert by_code(report)["LORA001"].status is Status.PASS
    assert check.diagnosis == "FM-MOE-LORA" and check.fix.verified, check.message
    assert check.measurements["grouped_mm.loss_rel_diff"].value == 0.0
    dead = check.evidence["experts_without_adapter_gradient"]["grouped_mm"]
    experts = session.model.config.num_experts
    assert dead and all(name.endswith(f"[{experts - 1}]") for name in dead), dead


def test_an_implementation_with_eagers_math_whose_expert_never_learns_is_not_chosen():
    """fault:moe-lora-quiet (issue 30): the grouped kernel's loss and gradients are eager's within tolerance (the
    expert it drops weighs a millionth), yet that expert's adapter gets an exact zero gradient. Same math is not
    enough: MOE001 reports FM-MOE-LORA and neither verifies nor chooses the kernel."""
    session = make_session("fault:moe-lora-quiet")
    report = run_checks(session, [LoraCheck, PackingCheck, MoeCheck])
    check = by_code(report)["MOE001"]
    ms = check.measurements
    assert ms["grouped_mm.loss_rel_diff"].within and ms["grouped_mm.grad_rel_diff"].within, check.message
    assert check.diagnosis == "FM-MOE-LORA" and check.fix.verified, check.message
    assert check.evidence["experts_without_adapter_gradient"]["grouped_mm"]
    assert check.evidence["left_off"]["grouped_mm"] == "adapters of routed experts get no gradient"
    assert session.patch_options[ids.MOE_EXPERTS_IMPLEMENTATION] != "grouped_mm"
    assert current(session.train_model) != "grouped_mm"


def test_training_runs_the_kernel_the_check_chose(tmp_path):
    """The choice travels in the report (patch_options): training in the checks' process and training --from
    the report JSON both switch the model to it."""
    res = runner.invoke(app, ["train", "fault:moe-kernel", "--max-steps", "1", "--batch-size", "2",
                              "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "Experts implementation: eager" in " ".join(res.output.split())
    check = json.loads((tmp_path / "run" / "check_report.json").read_text())
    assert check["verdict"] == "READY_WITH_FIXES"
    trained = json.loads((tmp_path / "run" / "train_report.json").read_text())
    assert ids.MOE_EXPERTS_IMPLEMENTATION in trained["patches_applied"]
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert config["patch_options"] == {ids.MOE_EXPERTS_IMPLEMENTATION: "eager"}
    res = runner.invoke(app, ["train", "fault:moe-kernel", "--from", str(tmp_path / "run" / "check_report.json"),
                              "--max-steps", "1", "--batch-size", "2", "--out", str(tmp_path / "again")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "again" / "train_config.json").read_text())["patch_options"] == \
        {ids.MOE_EXPERTS_IMPLEMENTATION: "eager"}


def test_an_expert_whose_tokens_do_not_reach_the_loss_is_not_blamed():
    """The false alarm the H200 run of config:qwen3-30b-a3b-12l showed (20 experts under eager): an expert routed
    only tokens the loss does not depend on rightly gets no adapter gradient. Here labels cover the first 8 of 96
    tokens, so most routed tokens are dead: they are not counted, and no expert is named."""
    import torch
    from peft import get_peft_model

    from onboard.checks.moe import _counter, _expert_lora_layers, _unlearning
    from onboard.harness.forward import PackedBatch
    from onboard.harness.samemath import loss_and_grads, randomise_lora_b
    from onboard.patches.moe import experts_modules

    session = make_session("tiny:qwen3_moe")
    model = get_peft_model(session.model, session.lora_config())
    randomise_lora_b(model, 0)
    ids_ = torch.randint(0, 500, (1, 96), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(ids_, -100)
    labels[0, :8] = ids_[0, :8]
    batch = PackedBatch(input_ids=ids_, labels=labels, sample=torch.zeros_like(ids_), position_ids=torch.arange(96)[None])
    counts, raw, hooks = {}, {}, []
    for _, module in experts_modules(model):
        pre, post = _counter(counts, module)
        hooks += [module.register_forward_pre_hook(pre, with_kwargs=True),
                  module.register_forward_hook(post, with_kwargs=True),
                  module.register_forward_pre_hook(lambda m, a, k: raw.__setitem__(id(m), k.get(
                      "top_k_index", a[1] if len(a) > 1 else None)), with_kwargs=True)]
    _, grads, _ = loss_and_grads(model, batch)
    for hook in hooks:
        hook.remove()
    live = sum(int(c.sum()) for c in counts.values())
    routed = sum(int(v.numel()) for v in raw.values())
    assert 0 < live < routed / 4  # only the labelled prefix's tokens count
    layers = _expert_lora_layers(model)
    assert _unlearning(layers, counts, grads) == []
    experts = session.model.config.num_experts
    every_routed = {k: torch.bincount(v.reshape(-1), minlength=experts) for k, v in raw.items()}
    assert _unlearning(layers, every_routed, grads)  # counting every routed token would blame the dead ones


def test_a_model_that_refuses_a_switch_by_name_is_judged_as_it_runs():
    """Kimi K2.5 (a composite model) refuses set_experts_implementation("grouped_mm") at its top level while its
    language model runs grouped_mm. The sweep's first run called that FM-MOE-KERNEL (the implementation in use
    was never run: a false alarm); the one in use now runs as the model has it, and matches eager."""
    _, check = _moe_check("tiny:kimi_k25")
    assert check.status is Status.PASS, check.message
    m = check.measurements
    assert m["implementation_in_use"].value == "grouped_mm"
    assert m["grouped_mm.grad_rel_diff"].value <= m["grouped_mm.grad_rel_diff"].limit
