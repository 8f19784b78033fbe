"""An axolotl training config read as the setup to check: the model, the LoRA adapter, packing, sequence
length, attention, precision and the Cut Cross Entropy plugin. Checks the setup does not use are SKIP
with the reason; what onboard cannot reproduce (4-bit loading, a hub dataset) is said in a note.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from onboard.config.runconfig import RunConfig
from onboard.harness.errors import BadInput

CCE_PLUGIN = "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin"
# legacy attention switches -> the attn_implementation they mean
ATTN_FLAGS = {"flash_attention": "flash_attention_2", "sdp_attention": "sdpa", "flex_attention": "flex_attention",
              "eager_attention": "eager", "xformers_attention": "xformers"}
# fields read here
USED = {
    "base_model", "base_model_config", "revision_of_model", "trust_remote_code", "model_type", "tokenizer_type",
    "tokenizer_config", "adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
    "lora_target_linear", "lora_modules_to_save", "lora_fan_in_fan_out", "peft_use_dora", "peft_use_rslora",
    "load_in_4bit", "load_in_8bit", "sample_packing", "eval_sample_packing", "pad_to_sequence_len",
    "sequence_len", "attn_implementation", *ATTN_FLAGS, "plugins", "cut_cross_entropy", "bf16", "fp16",
    "bfloat16", "float16", "tf32", "micro_batch_size", "gradient_accumulation_steps", "datasets",
    "chat_template", "chat_template_jinja", "seed", "lora_model_dir", "gradient_checkpointing", "torch_compile",
}
# axolotl fields that do not change what these checks measure: optimiser, schedule, logging, saving, ...
NOT_CHECKED = {
    "learning_rate", "num_epochs", "max_steps", "optimizer", "lr_scheduler", "warmup_steps", "warmup_ratio",
    "weight_decay", "output_dir", "dataset_prepared_path", "val_set_size", "logging_steps", "saves_per_epoch",
    "evals_per_epoch", "train_on_inputs", "group_by_length", "resume_from_checkpoint",
    "local_rank", "deepspeed", "fsdp", "fsdp_config", "strict", "debug", "special_tokens", "tokens",
    "max_grad_norm", "dataset_processes", "shuffle_merged_datasets", "save_total_limit",
    "auto_resume_from_checkpoints", "load_best_model_at_end", "save_safetensors", "low_cpu_mem_usage",
    "test_datasets", "loss_watchdog_threshold", "loss_watchdog_patience", "early_stopping_patience",
    "is_llama_derived_model", "is_mistral_derived_model", "is_qwen_derived_model", "is_falcon_derived_model",
    "unfrozen_parameters", "lora_on_cpu", "gptq", "save_strategy", "eval_strategy", "evaluation_strategy",
    "max_packed_sequence_len", "sample_packing_eff_est", "total_num_tokens", "profiler_steps", "seed_data",
    "use_tensorboard", "chat_template_kwargs", "default_system_message", "ddp_timeout", "ddp_bucket_cap_mb",
    "ddp_broadcast_buffers", "batch_size", "num_processes", "pretraining_dataset", "rl", "trl",
}
NOT_CHECKED_PREFIXES = ("wandb_", "mlflow_", "comet_", "hub_", "liger_", "eval_", "save_", "adam_", "lr_",
                        "fsdp_", "deepspeed_", "gradient_checkpointing_", "dataloader_", "ddp_", "torch_",
                        "neftune_", "dpo_", "kto_", "orpo_", "simpo_", "rl_", "sequence_parallel", "context_parallel",
                        "tensor_parallel", "ray_", "profiler_", "dataset_", "lisa_", "relora_", "loraplus_")


def read_axolotl(path: Path) -> RunConfig:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise BadInput(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BadInput(f"{path}: an axolotl config is a mapping of fields, got {type(data).__name__}")
    return _Reader(path, data).read()


class _Reader:
    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data = path, data
        self.config = RunConfig(path, "axolotl")

    def fail(self, message: str) -> BadInput:
        return BadInput(f"{self.path}: {message}")

    def note(self, message: str) -> None:
        self.config.notes.append(message)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = self.data.get(key, default)
        if value is None:
            return default
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
            raise self.fail(f"{key} must be {names.replace('bool', 'true or false')}, not {value!r}")
        return value

    def read(self) -> RunConfig:
        self._unknown_fields()
        self._model()
        self._adapter()
        self._packing()
        self._attention()
        self._precision()
        self._cce()
        self._accumulation()
        self._checkpointing()
        self._compile()
        self._data()
        return self.config

    def _unknown_fields(self) -> None:
        unknown = [k for k in self.data if k not in USED and k not in NOT_CHECKED
                   and not str(k).startswith(NOT_CHECKED_PREFIXES)]
        for key in unknown:  # a typo of a field that changes the setup must not pass silently
            close = difflib.get_close_matches(str(key), USED, n=1, cutoff=0.8)
            if close:
                raise self.fail(f"unknown field {key!r}: did you mean {close[0]}?")
        if unknown:
            self.note(f"fields onboard does not know, ignored: {', '.join(map(str, unknown))}")

    def _model(self) -> None:
        opts = self.config.options
        base = self.get("base_model", str)
        if not base:
            raise self.fail("base_model is missing: it names the model to train")
        local = (self.path.parent / base)
        opts["model"] = str(local.resolve()) if local.is_dir() else base
        if self.get("trust_remote_code", bool):
            opts["trust_remote_code"] = True
        if self.get("revision_of_model", str):
            opts["revision"] = self.data["revision_of_model"]
        if self.get("seed", int) is not None:
            opts["seed"] = self.data["seed"]
        model_type = self.get("model_type", str)
        if model_type and model_type not in ("AutoModelForCausalLM", "AutoModelForImageTextToText"):
            self.note(f"model_type {model_type}: onboard loads the model with AutoModelForCausalLM")
        for key in ("base_model_config", "tokenizer_config"):
            other = self.get(key, str)
            if other and other != base:
                self.note(f"{key} {other} differs from base_model: onboard uses base_model's")

    def _adapter(self) -> None:
        opts = self.config.options
        adapter = self.get("adapter", str)
        four, eight = self.get("load_in_4bit", bool, False), self.get("load_in_8bit", bool, False)
        if adapter is None:
            raise self.fail("no adapter: this config trains every weight; onboard checks LoRA fine-tuning "
                            "(set adapter: lora or qlora)")
        if adapter not in ("lora", "qlora"):
            raise self.fail(f"adapter {adapter!r}: onboard checks lora and qlora adapters")
        if adapter == "qlora" and not four:
            raise self.fail("adapter qlora needs load_in_4bit: true (as axolotl requires)")
        if adapter == "lora" and four:
            raise self.fail("load_in_4bit: true with adapter lora: 4-bit loading is adapter qlora")
        if four and eight:
            raise self.fail("load_in_4bit and load_in_8bit are both true")
        if four or eight:
            self.note(f"{'4' if four else '8'}-bit loading is not reproduced: the LoRA setup is checked on "
                      "unquantized weights")
        if self.get("lora_model_dir", str):
            self.note("lora_model_dir: a fresh adapter is checked, not the saved one")
        modules = self.get("lora_target_modules", (list, str))
        linear = self.get("lora_target_linear", bool, False)
        if isinstance(modules, str):
            modules = [modules]
        if modules and not all(isinstance(m, str) for m in modules):
            raise self.fail(f"lora_target_modules must be module names, not {modules!r}")
        if not modules and not linear:
            raise self.fail("no LoRA targets: set lora_target_modules or lora_target_linear: true")
        if modules and linear:
            self.note("lora_target_linear: true with lora_target_modules: all linear layers are targeted")
        if modules and not linear:
            opts["lora_targets"] = ",".join(modules)
        for key, opt in (("lora_r", "lora_rank"), ("lora_alpha", "lora_alpha")):
            value = self.get(key, int)
            if value is not None:
                if value <= 0:
                    raise self.fail(f"{key} must be positive, not {value}")
                opts[opt] = value
        dropout = self.get("lora_dropout", (int, float), 0)
        if dropout:
            self.note(f"lora_dropout {dropout} is not applied: the checks compare losses exactly")
        for key in ("lora_modules_to_save", "lora_fan_in_fan_out", "peft_use_dora", "peft_use_rslora"):
            if self.data.get(key):
                self.note(f"{key} is not checked")

    def _packing(self) -> None:
        opts = self.config.options
        packing = self.get("sample_packing", bool, False)
        seq = self.get("sequence_len", int, 2048)  # axolotl's default
        if seq <= 0:
            raise self.fail(f"sequence_len must be positive, not {seq}")
        opts["max_length"] = seq
        opts["pack_length"] = seq
        if packing:  # multipack fills each row up to sequence_len tokens: the longest row PACK001 judges
            opts["row_tokens"] = seq
        if not packing:
            self.config.not_applicable["PACK001"] = f"sample_packing is off in {self.path.name}"
            if self.get("eval_sample_packing", bool):
                self.note("eval_sample_packing without sample_packing: packing is checked only for training")

    def _attention(self) -> None:
        chosen = {}
        impl = self.get("attn_implementation", str)
        if impl:
            chosen["attn_implementation"] = impl
        for flag, meaning in ATTN_FLAGS.items():
            if self.get(flag, bool, False):
                chosen[flag] = meaning
        if len(set(chosen.values())) > 1:
            said = ", ".join(f"{k} ({v})" if k != "attn_implementation" else f"{k}: {v}" for k, v in chosen.items())
            raise self.fail(f"contradictory attention settings: {said}")
        if chosen:
            backend = next(iter(chosen.values()))
            if backend == "xformers":
                raise self.fail("xformers_attention is not a transformers attention backend onboard can check")
            self.config.options["attn"] = backend

    def _precision(self) -> None:
        bf16 = self.data.get("bf16", self.data.get("bfloat16"))
        fp16 = self.data.get("fp16", self.data.get("float16"))
        for key, value in (("bf16", bf16), ("fp16", fp16)):
            if value not in (None, True, False, "auto"):
                raise self.fail(f"{key} must be true, false or auto, not {value!r}")
        if bf16 is True and fp16 is True:
            raise self.fail("bf16 and fp16 are both true")
        if bf16 is True:
            self.config.options["dtype"] = "bfloat16"
        elif fp16 is True:
            self.config.options["dtype"] = "float16"
        # auto or unset: onboard's auto (bf16 on GPU, fp32 on CPU)

    def _cce(self) -> None:
        plugins = self.get("plugins", list, [])
        enabled = self.get("cut_cross_entropy", bool, False)
        listed = CCE_PLUGIN in plugins
        if enabled and not listed:
            raise self.fail(f"cut_cross_entropy: true needs the plugin {CCE_PLUGIN} in plugins")
        if listed and not enabled:
            self.note("the Cut Cross Entropy plugin is listed but cut_cross_entropy is not true: CCE is off")
        if not (listed and enabled):
            self.config.not_applicable["CCE001"] = f"Cut Cross Entropy is not enabled in {self.path.name}"
        others = [p for p in plugins if p != CCE_PLUGIN]
        if others:
            self.note(f"plugins not checked: {', '.join(map(str, others))}")

    def _accumulation(self) -> None:
        steps = self.get("gradient_accumulation_steps", int, 1)
        if steps < 1:
            raise self.fail(f"gradient_accumulation_steps must be at least 1, not {steps}")
        if steps == 1:
            self.config.not_applicable["GA001"] = f"gradient_accumulation_steps is 1 in {self.path.name}"

    def _checkpointing(self) -> None:
        value = self.data.get("gradient_checkpointing")
        if value is None:
            return
        if isinstance(value, bool):
            self.config.options["gradient_checkpointing"] = value
        elif isinstance(value, str):  # axolotl's "unsloth" / "offload" modes checkpoint too, with offloading
            self.config.options["gradient_checkpointing"] = True
            self.note(f"gradient_checkpointing {value!r}: onboard checks the step with plain (non-reentrant) "
                      "checkpointing, without offloading")
        else:
            raise self.fail(f"gradient_checkpointing must be true, false or a mode name, not {value!r}")

    def _compile(self) -> None:
        value = self.data.get("torch_compile")
        if value is None or value == "auto":
            return
        if not isinstance(value, bool):
            raise self.fail(f"torch_compile must be true, false or auto, not {value!r}")
        self.config.options["torch_compile"] = value  # COMPILE001 checks the compiled step, on the CPU too

    def _data(self) -> None:
        template = self.get("chat_template", str)
        jinja = self.get("chat_template_jinja", str)
        if jinja and template not in (None, "jinja"):
            raise self.fail(f"chat_template_jinja is set but chat_template is {template!r}, not jinja")
        if template == "jinja" and not jinja:
            raise self.fail("chat_template: jinja needs chat_template_jinja")
        if jinja:
            self.config.template_text = jinja
        elif template == "chatml":
            from onboard.harness.sources import chatml_template

            self.config.template_text = chatml_template()
        elif template not in (None, "tokenizer_default"):
            self.note(f"chat_template {template}: not available to onboard; the tokenizer's own template is used")
        datasets = self.get("datasets", list, [])
        local = []
        for ds in datasets:
            if not isinstance(ds, dict) or "path" not in ds:
                raise self.fail(f"each entry of datasets needs a path, got {ds!r}")
            file = next((p for p in (self.path.parent / ds["path"], Path(ds["path"])) if p.is_file()), None)
            messages = ds.get("field_messages", "messages")
            if file and file.suffix == ".jsonl" and ds.get("type") == "chat_template" and messages == "messages":
                local.append(file)
        if local:
            self.config.options["data"] = str(local[0].resolve())
            if len(datasets) > 1:
                self.note(f"checked on the first local chat dataset, {local[0].name}, of {len(datasets)}")
        elif datasets:
            self.note("datasets are not local chat_template JSONL files: checked on onboard's built-in chats")
