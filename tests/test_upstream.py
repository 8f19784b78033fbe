"""Every private name of torch, transformers, PEFT or pytest that onboard uses, listed with the place that uses it
and a probe of the behaviour onboard relies on. An upgrade that renames or changes one fails here, by name,
instead of as a wrong verdict deep inside a check. A scan of onboard's source keeps the list complete: a new
private use that is not listed fails `test_every_private_use_is_listed`."""

from __future__ import annotations

import ast
import inspect
import logging
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent / "onboard"


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    return LlamaForCausalLM(config)


def probe_attn_implementation():
    from transformers import LlamaConfig

    config = LlamaConfig()
    config._attn_implementation = "eager"  # ATTN001 and the attention patches switch the backend this way
    assert config._attn_implementation == "eager"


def probe_from_config():
    from transformers import LlamaConfig, LlamaForCausalLM

    params = inspect.signature(LlamaForCausalLM._from_config).parameters
    assert "config" in params and any(p.kind is p.VAR_KEYWORD for p in params.values())
    model = LlamaForCausalLM._from_config(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
                                                      num_hidden_layers=1, num_attention_heads=2),
                                          dtype=torch.float32, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"


def probe_model_mapping():
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    assert AutoModelForCausalLM._model_mapping[LlamaConfig] is LlamaForCausalLM


def probe_supports_attention_backend():
    from transformers import LlamaForCausalLM

    assert LlamaForCausalLM._supports_attention_backend is True


def probe_experts_implementation():
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(vocab_size=32, hidden_size=16, intermediate_size=32, moe_intermediate_size=8,
                            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, num_experts=4,
                            num_experts_per_tok=2)
    model = Qwen3MoeForCausalLM(config)
    model.set_experts_implementation("eager")
    assert model.config._experts_implementation == "eager"
    model.config._experts_implementation_internal = "batched_mm"  # the moe patch's revert path writes this
    assert model.config._experts_implementation == "batched_mm"


def probe_get_num_items_in_batch():
    from transformers import Trainer

    params = list(inspect.signature(Trainer._get_num_items_in_batch).parameters)
    assert params[1:3] == ["batch_samples", "device"], params


def probe_require_grads_hook():
    model = _tiny_llama()
    model.enable_input_require_grads()
    assert model._require_grads_hook is not None  # training.restore_parameters removes it by this handle
    assert model._require_grads_hooks == [model._require_grads_hook]  # enable_checkpointing: registered once
    model.disable_input_require_grads()
    assert not model.get_input_embeddings()._forward_hooks


def probe_conv_nd():
    from torch.nn.modules.conv import _ConvNd

    assert issubclass(torch.nn.Conv1d, _ConvNd) and issubclass(torch.nn.Conv2d, _ConvNd)


def probe_dynamo():
    import torch._dynamo
    from torch._dynamo.utils import counters

    assert callable(torch._dynamo.reset)
    assert hasattr(counters, "clear") and "graph_break" in counters or hasattr(counters, "__getitem__")


def probe_graph_break_log():
    """COMPILE001 names graph breaks from the records of this logger, which `set_logs(graph_breaks=True)` turns on."""
    import torch._dynamo
    import torch._logging

    assert "graph_breaks" in inspect.signature(torch._logging.set_logs).parameters
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("torch._dynamo.symbolic_convert.__graph_breaks")
    logger.addHandler(handler)
    torch._logging.set_logs(graph_breaks=True)
    try:
        def f(x):
            x = x + 1
            torch._dynamo.graph_break()
            return x * 2

        torch._dynamo.reset()
        torch.compile(f, backend="eager")(torch.ones(2))
    finally:
        logger.removeHandler(handler)
        torch._logging.set_logs()
        torch._dynamo.reset()
    assert any("Graph break" in r.getMessage() for r in records)


def probe_compiled_call_impl():
    layer = torch.nn.Linear(2, 2)
    layer.compile(backend="eager")
    assert layer._compiled_call_impl is not None  # speed.compiled_layers reverts by setting it back to None
    layer._compiled_call_impl = None


def probe_name_or_path():
    from transformers import LlamaConfig

    assert LlamaConfig(name_or_path="x")._name_or_path == "x"


def probe_peft_tuners_utils():
    from peft.tuners import tuners_utils

    assert inspect.isclass(tuners_utils._ExcludedModule)
    assert list(inspect.signature(tuners_utils._maybe_include_all_linear_layers).parameters)[:2] == [
        "peft_config", "model"]
    # optional for onboard (read with getattr), listed so a rename is seen: PEFT's refusal of Mamba's out_proj
    assert callable(tuners_utils._check_lora_target_modules_mamba)


def probe_peft_moe_conversion():
    from peft.utils.transformers_weight_conversion import _convert_peft_config_moe

    assert list(inspect.signature(_convert_peft_config_moe).parameters)[:2] == ["peft_config", "model"]


def probe_pytest_numcollected(pytestconfig):
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        pytest.skip("no terminal reporter in this run")
    assert isinstance(reporter._numcollected, int)  # the plugin adds the checks it collects to the count


# name -> (where onboard uses it, the probe)
def probe_module_hooks():
    """The slice reads who hooked a module (harness/slice.py: a hook planted on a layer is part of its kind): a
    registered hook is a value of the module's _forward_hooks, _forward_pre_hooks or _backward_hooks dict."""
    layer = torch.nn.Linear(2, 2)

    def hook(*_):
        return None

    layer.register_forward_hook(hook)
    layer.register_forward_pre_hook(hook)
    layer.register_full_backward_hook(hook)
    assert list(layer._forward_hooks.values()) == [hook] and list(layer._forward_pre_hooks.values()) == [hook]
    assert list(layer._backward_hooks.values()) == [hook]


PRIVATE = {
    "_attn_implementation": ("checks/attention.py, checks/load.py, patches/attention.py, patches/speed.py, "
                             "patches/packing.py, harness/session.py", probe_attn_implementation),
    "_from_config": ("harness/loading.py (tiny models), fixtures/faults.py", probe_from_config),
    "_model_mapping": ("harness/loading.py: the class a tiny config builds", probe_model_mapping),
    "_supports_attention_backend": ("patches/speed.py: packed attention applies", probe_supports_attention_backend),
    "_experts_implementation": ("patches/moe.py, fixtures/faults.py", probe_experts_implementation),
    "_experts_implementation_internal": ("patches/moe.py: revert", probe_experts_implementation),
    "_get_num_items_in_batch": ("checks/grad_accum.py, checks/train_step.py", probe_get_num_items_in_batch),
    "_require_grads_hook": ("harness/training.py: restore_parameters", probe_require_grads_hook),
    "_require_grads_hooks": ("harness/training.py: enable_checkpointing registers the hook once",
                             probe_require_grads_hook),
    "_ConvNd": ("checks/lora.py: convolution parameters", probe_conv_nd),
    "torch._dynamo": ("checks/compile.py: counters, reset", probe_dynamo),
    "torch._dynamo.utils": ("checks/compile.py: counters", probe_dynamo),
    "_dynamo": ("checks/compile.py: torch._dynamo.reset", probe_dynamo),
    "torch._logging": ("checks/compile.py: set_logs(graph_breaks=True) and its logger", probe_graph_break_log),
    "_logging": ("checks/compile.py: torch._logging.set_logs", probe_graph_break_log),
    "_compiled_call_impl": ("patches/speed.py: compiled_layers revert", probe_compiled_call_impl),
    "_name_or_path": ("train/run.py: the base model's folder", probe_name_or_path),
    "_ExcludedModule": ("api.py, patches/peft_targets.py", probe_peft_tuners_utils),
    "_maybe_include_all_linear_layers": ("api.py: what all-linear reaches", probe_peft_tuners_utils),
    "_check_lora_target_modules_mamba": ("patches/peft_targets.py", probe_peft_tuners_utils),
    "_convert_peft_config_moe": ("api.py: PEFT's MoE config rewrite", probe_peft_moe_conversion),
    "_numcollected": ("pytest_plugin.py: collected count", probe_pytest_numcollected),
    "_forward_hooks": ("harness/slice.py: a layer's kind", probe_module_hooks),
    "_forward_pre_hooks": ("harness/slice.py: a layer's kind", probe_module_hooks),
    "_backward_hooks": ("harness/slice.py: a layer's kind", probe_module_hooks),
}


@pytest.mark.parametrize("name", sorted(PRIVATE))
def test_private_api_still_behaves(name, request):
    where, probe = PRIVATE[name]
    kwargs = {"pytestconfig": request.config} if "pytestconfig" in inspect.signature(probe).parameters else {}
    try:
        probe(**kwargs)
    except (AttributeError, ImportError, KeyError, TypeError, AssertionError) as exc:
        pytest.fail(f"upstream changed {name}, which onboard uses in {where}: {type(exc).__name__}: {exc}")


def _private_uses() -> set[str]:
    """Private names onboard reads from other libraries: attributes and imports that start with one underscore and
    that onboard does not define itself, and names given to getattr/hasattr/setattr as strings."""
    defined, used = set(), set()
    trees = [ast.parse(p.read_text(encoding="utf-8")) for p in ROOT.rglob("*.py")]
    for tree in trees:
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(n.name)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                defined.add(n.id)
            elif isinstance(n, ast.arg):
                defined.add(n.arg)
            elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name) \
                    and n.value.id == "self":
                defined.add(n.attr)
    for tree in trees:
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute):
                used.add(n.attr)
            elif isinstance(n, ast.ImportFrom) and n.module and not n.module.startswith("onboard") and n.level == 0:
                used.update(a.name for a in n.names)
                used.update(part for part in n.module.split(".") if part.startswith("_"))
                if any(part.startswith("_") for part in n.module.split(".")):
                    used.add(n.module)
            elif isinstance(n, ast.Import):
                used.update(a.name for a in n.names if any(part.startswith("_") for part in a.name.split(".")))
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "hasattr", "setattr") \
                    and len(n.args) > 1 and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str):
                used.add(n.args[1].value)
    return {u for u in used if u.startswith("_") and not u.startswith("__") and u not in defined} | \
           {u for u in used if "._" in u}


def test_every_private_use_is_listed():
    unlisted = sorted(_private_uses() - set(PRIVATE))
    assert not unlisted, f"private upstream names onboard uses without a probe in tests/test_upstream.py: {unlisted}"
