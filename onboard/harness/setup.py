"""Setup: what a check run, and the training it vouches for, are made of. One type, one set of defaults.

The CLI's options, the config files (onboard.toml, [tool.onboard], an axolotl YAML), the pytest plugin and
the Python API (`onboard.check`) all build a Setup; the session is opened from it, the report records it, and
`onboard train` builds its model, LoRA, collator and TrainingArguments from the same object. A field marked
`trained` is one the checks' verdicts depend on: `train --from` and `onboard.apply_patches` refuse a run whose
value differs from the checked one, naming the field.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from onboard.harness.errors import BadInput


def _opt(default, help: str, *, trained: bool = False, group: str, types: tuple = (), path: bool = False,
         cli: bool = True, aliases: tuple[str, ...] = (), check_only: bool = False):
    """A Setup field and its option: `cli` False for config files only; `aliases`, more names on the command line;
    `check_only`, an option of `onboard check` that `onboard train` does not take (it trains with the fixes)."""
    meta = {"help": help, "trained": trained, "group": group, "types": types, "path": path, "cli": cli,
            "aliases": aliases, "check_only": check_only}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


TRAINERS = ("hf", "custom")
SLICES = ("auto", "off", "only")
# how a chat becomes a training sample: auto finds it from the model (seq2seq where a forward's logits follow the
# labels given, not the input: an encoder-decoder's), causal (next-token over the whole chat), seq2seq (the chat
# up to the last reply to the encoder, the reply as the labels)
TASKS = ("auto", "causal", "seq2seq")
# what --dtype takes besides "auto", each to its torch name (the session resolves them; train --from compares them)
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16"}


@dataclass(frozen=True)
class Setup:
    # ---- the model
    model: str | None = _opt(None, "hub id (org/name), local folder, .gguf file, tiny:ARCH, config:NAME, fault:NAME, "
                             "or an embedded model (smollm2, gemma3-270m); default smollm2", group="model",
                             types=(str,), cli=False)
    revision: str | None = _opt(None, "hub revision (branch, tag or commit)", group="model", types=(str,))
    trust_remote_code: bool = _opt(False, "allow the model's own code from the hub", group="model", types=(bool,))
    random_weights: bool = _opt(False, "build from the config with random weights", group="model", types=(bool,))
    # ---- where and how it runs
    device: str = _opt("auto", "auto, cpu, cuda, cuda:N", group="runtime", types=(str,))
    dtype: str = _opt("auto", "auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16", trained=True,
                      group="runtime", types=(str,))
    attn: str | None = _opt(None, "attention implementation training uses: eager, sdpa, flex_attention, "
                            "flash_attention_2, ...", trained=True, group="runtime", types=(str,))
    # ---- LoRA
    lora_targets: tuple[str, ...] | None = _opt(None, "comma-separated module names (default all-linear)",
                                                trained=True, group="lora", types=(list, str))
    lora_rank: int = _opt(16, "LoRA rank (check and train alike)", trained=True, group="lora", types=(int,),
                          aliases=("--lora-r",))
    lora_alpha: int = _opt(32, "LoRA alpha (check and train alike)", trained=True, group="lora", types=(int,))
    # ---- data and lengths
    data: str | None = _opt(None, "chat samples, JSONL of {\"messages\": [...]}; default: onboard's built-in chats",
                            group="data", types=(str,), path=True)
    chat_template: str | None = _opt(None, "a Jinja chat template file to use instead of the tokenizer's",
                                     group="data", types=(str,), path=True)
    task: str = _opt("auto", "the objective: auto (seq2seq where the model's logits follow the labels given, not "
                     "its input, as an encoder-decoder's do; else causal), causal (next-token over the chat), seq2seq "
                     "(the chat up to the last reply to the encoder, the reply as the labels)", trained=True,
                     group="data", types=(str,))
    max_length: int = _opt(2048, "tokens a sample keeps (longer ones are truncated)", trained=True, group="data",
                           types=(int,))
    pack_length: int = _opt(512, "tokens per packed row in the packing check", group="data", types=(int,),
                            check_only=True)
    row_tokens: int | None = _opt(None, "the longest packed row training builds, in tokens: PACK001 puts a sample at "
                                  "its far end (default: the 8 longest samples of the data, at most 8 x max-length, "
                                  "what onboard train's default batch of 8 packs)", trained=True, group="data",
                                  types=(int,))
    seed: int = _opt(0, "seed for random weights, probes and training", group="data", types=(int,))
    # ---- training flags
    gradient_checkpointing: bool | None = _opt(None, "checkpoint gradients in the training step (default: on with "
                                               "CUDA)", trained=True, group="training", types=(bool,))
    checkpoint_every: int = _opt(1, "when checkpointing, checkpoint every n-th decoder layer (transformers' "
                                 "every_n_layers: the others keep their activations; 1: every layer)", trained=True,
                                 group="training", types=(int,))
    trainer: str = _opt("hf", "the training loop whose conventions the checks judge: hf (the HF Trainer, TRL, axolotl, "
                        "onboard train: config.use_cache=False in training, a packing collator with no mask) or custom "
                        "(a loop of your own: the model's default use_cache, possibly an all-ones mask)", trained=True,
                        group="training", types=(str,))
    torch_compile: bool | None = _opt(None, "check the training step under torch.compile (COMPILE001; default: on "
                                      "with CUDA)", group="training", types=(bool,))
    slice: str = _opt("auto", "where the code-path checks run: auto (on a layer-complete slice of the model, one or two "
                      "layers of each kind with their real weights, where one is shown to be the model's own layers; "
                      "the whole model runs the weights, the pretrained loss, memory and the training step), off "
                      "(every check on the whole model) or only (the whole model is not loaded: the slice's layers are "
                      "read from the checkpoint, and the checks that need the whole model are SKIP; tiny: and fault: "
                      "models are built whole, as with auto)", group="run", types=(str,), check_only=True)
    nproc: int = _opt(1, "FSDP001: shard the model with FSDP2 over N processes (gloo on the CPU, one GPU each with "
                      "NCCL) and compare one training step with one process (1: not run)", group="run", types=(int,),
                      check_only=True)
    # ---- the run
    no_fix: bool = _opt(False, "report only: do not apply and verify fixes", group="run", types=(bool,),
                        check_only=True)
    unsafe_fixes: bool = _opt(False, "also apply patches that change what is trained", group="run", types=(bool,))
    strict: bool = _opt(False, "exit 1 on READY_WITH_FIXES too", group="run", types=(bool,), check_only=True)
    # ---- from config files only
    thresholds: dict = _opt({}, "threshold overrides by name (onboard explain lists them)", group="run",
                            types=(dict,), cli=False)
    skip: dict = _opt({}, "check code -> why the training setup does not use it (the check is SKIP)", group="run",
                      types=(dict,), cli=False)
    chat_template_text: str | None = _opt(None, "a chat template given inline (axolotl's chat_template_jinja)",
                                          group="data", types=(str,), cli=False)

    def __post_init__(self):
        targets = self.lora_targets
        if isinstance(targets, str):
            targets = [t for t in targets.split(",")]
        if targets is not None:
            targets = tuple(t.strip() for t in targets if t.strip())
            if not targets or targets == ("all-linear",):
                targets = None
            object.__setattr__(self, "lora_targets", targets)
        if self.task not in TASKS:
            raise BadInput(f"task must be one of {', '.join(TASKS)}, not {self.task!r}")
        if self.slice not in SLICES:
            raise BadInput(f"slice must be one of {', '.join(SLICES)}, not {self.slice!r}")
        if self.trainer not in TRAINERS:
            raise BadInput(f"trainer must be one of {', '.join(TRAINERS)}, not {self.trainer!r}")
        for name in ("max_length", "pack_length", "lora_rank", "lora_alpha", "checkpoint_every", "nproc"):
            if getattr(self, name) < 1:
                raise BadInput(f"{name} must be at least 1, not {getattr(self, name)}")

    # ---- building one ----------------------------------------------------------------------------

    @classmethod
    def build(cls, source: str = "options", **options: Any) -> Setup:
        """A Setup from named options (a config file's, the API's keywords): unknown names get a
        "did you mean", wrong types name the option; None means "the default"."""
        checked = {name: check_value(source, name, value) for name, value in options.items() if value is not None}
        return cls(**checked)

    def replace(self, **changes: Any) -> Setup:
        return dataclasses.replace(self, **changes)

    # ---- reading it ------------------------------------------------------------------------------

    def spec(self):
        from onboard.harness.spec import ModelSpec

        return ModelSpec.parse(self.model, revision=self.revision, trust_remote_code=self.trust_remote_code,
                               random_weights=self.random_weights)

    def template_text(self) -> str | None:
        if self.chat_template:
            try:
                return Path(self.chat_template).read_text(encoding="utf-8")
            except OSError as exc:
                raise BadInput(f"cannot read chat template {self.chat_template}: {exc.strerror}") from exc
        return self.chat_template_text

    def threshold_table(self, source: str = "options"):
        from onboard.harness.thresholds import Thresholds

        return Thresholds(self.thresholds, source)


FIELDS = {f.name: f for f in fields(Setup)}
DEFAULT = Setup()
# what the checks' verdicts depend on: a run whose value differs is not the run that was checked
TRAINED_WITH = tuple(name for name, f in FIELDS.items() if f.metadata["trained"])


def help_of(name: str) -> str:
    return FIELDS[name].metadata["help"]


def check_value(source: str, name: str, value: Any) -> Any:
    """One option's value, type-checked against the Setup field (a config file or the API gave it)."""
    if name not in FIELDS:
        close = difflib.get_close_matches(name, list(FIELDS), n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(FIELDS)}"
        raise BadInput(f"{source}: unknown option {name!r}{hint}")
    want = FIELDS[name].metadata["types"]
    if isinstance(value, Path) and str in want:
        value = str(value)
    if isinstance(value, tuple) and list in want:
        value = list(value)
    if not isinstance(value, want) or (isinstance(value, bool) and bool not in want):
        names = " or ".join(t.__name__ for t in want)
        raise BadInput(f"{source}: {name} must be a {names}, not {value!r}")
    if name == "lora_targets":
        targets = value.split(",") if isinstance(value, str) else value
        if not all(isinstance(t, str) and t.strip() for t in targets):
            raise BadInput(f"{source}: lora_targets must be module names, not {value!r}")
        return tuple(t.strip() for t in targets)
    return value


def merged(file_options: Mapping[str, Any], given: Mapping[str, Any], from_cli: set[str], source: str) -> Setup:
    """The command line wins over the file, the file over the defaults: `given` holds every option the CLI
    knows (defaults included), `from_cli` the names the user typed."""
    options = {k: v for k, v in given.items() if k in from_cli}
    for name, value in file_options.items():
        options.setdefault(name, value)
    return Setup.build(source, **options)


__all__ = ["DEFAULT", "FIELDS", "Setup", "TRAINED_WITH", "check_value", "help_of", "merged"]
