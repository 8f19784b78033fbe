"""ModelSession: one loaded model and its tokenized data, opened from a Setup, shared by every check of a run.

Its state changes only through methods that say so: `set_adapter` (LoRA built or dropped), `apply_patch` and
`revert_patch`, `set_examples`. Each drops what was computed on the old state (reference losses, logit width),
so a check never reads a number measured on another model than the one it runs on.
"""

from __future__ import annotations

import time
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import torch

from onboard.harness.data import BUILTIN_CHATS, FALLBACK_TEMPLATE, Example, read_chats, tokenize_chat, tokenize_seq2seq
from onboard.harness.errors import BadInput, EnvironmentProblem
from onboard.harness.setup import DEFAULT, DTYPE_NAMES, Setup
from onboard.patches.base import PatchContext, PatchHandle, unwrap

_DTYPES = {alias: getattr(torch, name) for alias, name in DTYPE_NAMES.items()}
_DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise BadInput(f"unknown device {name!r}: use one of {', '.join(_DEVICES)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EnvironmentProblem("--device cuda was asked for, but no CUDA GPU is available")
    return device


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise BadInput(f"unknown dtype {name!r}: use one of {', '.join(_DTYPES)}")
    return _DTYPES[name]


class ModelSession:
    """One loaded model and its tokenized data, shared by every check of a run."""

    def __init__(self, setup: Setup | None = None, *, max_examples: int | None = None, thresholds_source: str = "",
                 progress: Callable[[str], None] = lambda _: None, **options):
        """`setup`, or the Setup of `options` (`ModelSession(model="tiny:llama", device="cpu")`).
        `max_examples`: the checks' sample of a large data file (training reads all of it)."""
        from onboard.harness.loading import Loading, load

        setup = setup.replace(**options) if setup is not None else Setup.build(**options)
        spec = setup.spec()
        if spec.kind.value == "fault":  # a fault may need its trigger: LoRA targets or a backend
            from onboard.harness.sources import fault as fault_named

            fault = fault_named(spec.target)
            setup = setup.replace(lora_targets=setup.lora_targets or fault.lora_targets, attn=setup.attn or fault.attn,
                                  torch_compile=setup.torch_compile if setup.torch_compile is not None
                                  else fault.torch_compile,
                                  gradient_checkpointing=setup.gradient_checkpointing
                                  if setup.gradient_checkpointing is not None else fault.gradient_checkpointing,
                                  nproc=fault.nproc if fault.nproc and setup.nproc == DEFAULT.nproc else setup.nproc,
                                  trainer=fault.trainer if fault.trainer and setup.trainer == DEFAULT.trainer
                                  else setup.trainer)
            if getattr(fault, "max_length", None) and setup.max_length == DEFAULT.max_length:
                setup = setup.replace(max_length=fault.max_length)  # the fault's trigger, unless one was given
        self.setup = setup  # the setup in effect: what the report records and training builds from
        self.spec = spec
        # the backend the training model runs: the asked one (setup.attn), or the one attention.fallback chose
        self.attn = setup.attn
        self.device = resolve_device(setup.device)
        self.dtype = resolve_dtype(setup.dtype, self.device)
        if self.device.type == "cpu" and self.dtype is torch.float16:
            progress("float16 on the CPU has no fast kernels: expect a run many times slower than float32")
            self.warnings = ["float16 on the CPU has no fast kernels: the run is many times slower than float32"]
        else:
            self.warnings = []
        self.thresholds = setup.threshold_table(thresholds_source or "options")
        self.data_path = Path(setup.data) if setup.data else BUILTIN_CHATS
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.peft_model = None  # set through set_adapter by the lora check; later checks train through it
        self.applied: dict[str, object] = {}  # patch id -> handle (None for a LoRA-config transform), in order
        # patch id -> the choice an applied patch was given (MOE001's experts implementation): written only by
        # apply_patch and revert_patch, from the value the caller passed
        self.patch_options: dict[str, str] = {}
        self.results: dict = {}  # check code -> its CheckResult in this run, as the runner records them
        self._reference: dict[int, torch.Tensor] = {}  # example index -> its per-token losses run alone
        self._logit_width: int | None = None
        self._position_start: int | None = None

        chats = read_chats(self.data_path)  # bad data (any line of it) fails before a slow load
        self.n_chats = len(chats)
        chats = chats[:max_examples] if max_examples else chats  # the checks' sample of a large file
        template = setup.template_text()
        start = time.perf_counter()
        torch.manual_seed(setup.seed)
        loading = Loading(spec, self.device, self.dtype, setup.attn, progress, slice_only=setup.slice == "only")
        self.tokenizer, self.model = load(loading)
        self.attn_load_error = loading.attn_load_error  # ATTN001 reports it
        self.loading_info = loading.loading_info  # LOAD001 reads it
        self.setup_calls = loading.setup_calls  # the calls the model's API requires, made (X-MOD's language)
        # why the whole model is not loaded (--slice only, or its weights do not fit the card; it is on the meta
        # device): the checks that need it are SKIP saying why, the others run on the slice
        self.whole_absent = loading.whole_absent
        self._slice_weights = loading.slice_weights
        self.timings["model_load"] = time.perf_counter() - start
        start = time.perf_counter()
        if template:
            self.tokenizer.chat_template = template
        self.chat_template = getattr(self.tokenizer, "chat_template", None)
        self.template_is_fallback = not self.chat_template
        # how a chat becomes a sample: as asked, or found from the model's behaviour (onboard.harness.inputs)
        if setup.task == "auto":
            from onboard.harness.inputs import objective

            self.task = objective(self.model, self.tokenizer)
        else:
            self.task = setup.task
        if self.task == "seq2seq" and callable(getattr(self.model, "prepare_decoder_input_ids_from_labels", None)):
            # every batch as DataCollatorForSeq2Seq(model=...) sends it: the decoder's input from the labels
            from onboard.harness.inputs import feed_decoder_from_labels

            feed_decoder_from_labels(self.model)
            self.setup_calls = [*self.setup_calls, "decoder_input_ids = model.prepare_decoder_input_ids_from_labels("
                                "labels), as DataCollatorForSeq2Seq(model=model) sends them"]
        self.examples: list[Example] = self.tokenize(chats)
        self.timings["tokenize"] = time.perf_counter() - start
        # the layer-complete slice (onboard.harness.slice): the checks that test code paths run on it, the ones
        # that need depth on the whole model; `use` moves the patches and the adapter between them
        self.whole_model = self.model
        self.slice_model, self.slice_map, self.slice_reason = None, None, None
        self.slice_refused = False  # a slice smaller than the model was tried and refused (slice_reason says why)
        self.placement = "whole"
        self._adapter_at = 0  # how many patches were applied when the adapter was built: replayed in that order
        self._parked: dict[int, tuple[object, str]] = {}  # id(model) -> (its adapter, its LoRA config) while away
        if self.whole_absent:
            start = time.perf_counter()
            self._build_slice()
            self.timings["slice"] = time.perf_counter() - start
            if self.slice_model is None:
                raise EnvironmentProblem(f"{self.spec.display} cannot be checked here: {self.whole_absent}, and "
                                         f"{self.slice_reason}")
            self.model, self.placement = self.slice_model, "slice"
        elif setup.slice == "off":
            self.slice_reason = "--slice off: every check ran on the whole model"
        elif self.task == "seq2seq":
            self.slice_reason = "an encoder-decoder is checked whole (onboard's limit: the slice cuts one layer stack)"
        else:
            start = time.perf_counter()
            self._build_slice()
            self.timings["slice"] = time.perf_counter() - start

    # the setup's fields the checks read
    max_length = property(lambda self: self.setup.max_length)
    pack_length = property(lambda self: self.setup.pack_length)

    @property
    def longest_row(self) -> int:
        """The longest packed row training builds, in tokens: --row-tokens, else what onboard train's default
        micro-batch (8 samples, one packed row) makes of this data at its longest (the 8 longest samples, at
        most 8 x max_length). `onboard train` refuses rows longer than the checks judged."""
        from onboard.patches.packing import UNPACKED_BATCH

        if self.setup.row_tokens:
            return self.setup.row_tokens
        longest = sorted((len(ex) for ex in self.examples), reverse=True)[:UNPACKED_BATCH]
        return min(sum(longest), UNPACKED_BATCH * self.max_length)
    seed = property(lambda self: self.setup.seed)
    lora_rank = property(lambda self: self.setup.lora_rank)
    lora_alpha = property(lambda self: self.setup.lora_alpha)
    gradient_checkpointing = property(lambda self: self.setup.gradient_checkpointing)

    @property
    def lora_targets(self) -> list[str] | None:
        return list(self.setup.lora_targets) if self.setup.lora_targets else None

    # ---- state the checks share, changed only here ------------------------------------------------

    def invalidate(self) -> None:
        """Drop what was computed on the current model, patches and data (a change the session did not make)."""
        self._reference = {}
        self._logit_width = None

    def set_model(self, model) -> None:
        """Replace the loaded model (tests plant a model of their own); LoRA, computed values and the slice go with
        it: every check then runs on `model`."""
        self.use("whole")
        self.set_adapter(None)
        self.model = self.whole_model = model.to(self.device).eval()
        self.slice_model, self.slice_map = None, None
        self.slice_reason = "a model set by the caller: every check ran on it"
        self.invalidate()

    def _build_slice(self) -> None:
        from onboard.harness.slice import NoSlice, build_slice

        try:
            weights = "model" if not self.whole_absent else self._slice_weights or "random"
            self.slice_model, self.slice_map = build_slice(self.whole_model, self.probe_batch(1)["input_ids"],
                                                           self.device, weights=weights)
        except NoSlice as exc:
            self.slice_reason = f"no slice smaller than the model: {exc}"
            self.slice_refused = not exc.whole_is_slice
        except Exception as exc:  # noqa: BLE001 - onboard's own limit: every check runs on the whole model
            self.slice_refused = True
            self.slice_reason = f"the slice could not be built: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        else:
            from onboard.harness.loading import required_setup

            required_setup(self.slice_model)  # the model's own setup calls (X-MOD's language), as the whole had

    def use(self, placement: str, replay: bool = True) -> str:
        """Run what follows on the slice ("slice") or the whole model ("whole"): the patches applied so far and the
        adapter are taken off the one and replayed (unless `replay` is False: training applies its own), in the
        order they were made, on the other. Without a slice, everything runs on the whole model. Returns where it
        runs."""
        if self.whole_absent:  # the whole model is on the meta device: everything runs on the slice
            placement = "slice"
        target = self.slice_model if placement == "slice" else self.whole_model
        if target is None:
            target, placement = self.whole_model, "whole"
        if target is self.model:
            return placement
        from onboard.patches import get_patch
        from onboard.patches.attention import current_backend

        moved = [(patch_id, self.patch_options.get(patch_id)) for patch_id in self.applied] if replay else []
        adapter_at = self._adapter_at if self.peft_model is not None and replay else None
        key = self._lora_key() if self.peft_model is not None else None
        self.revert_patches()
        backend = current_backend(self.model)  # ATTN001's switch, if any: the backend training asks for
        if self.peft_model is not None:  # parked on its model, not unloaded: the way back needs no rebuild
            self._parked[id(self.model)] = (self.peft_model, key)
            self.peft_model = None
        self.model = target
        if current_backend(target) != backend:
            target.set_attn_implementation(backend)
        if adapter_at is None and id(target) in self._parked:  # no adapter wanted here: the parked one goes
            self._parked.pop(id(target))[0].unload()
        for k, (patch_id, option) in enumerate(moved):
            if adapter_at == k:
                self._rebuild_adapter()
            self.apply_patch(get_patch(patch_id), option=option)
        if adapter_at is not None and adapter_at >= len(moved):
            self._rebuild_adapter()
        self.placement = placement
        self.invalidate()
        return placement

    @contextmanager
    def placed(self, placement: str) -> Iterator[None]:
        """The block on `placement` (use), then back where the session was."""
        where = self.placement
        self.use(placement)
        try:
            yield
        finally:
            self.use(where)

    @property
    def whole_fits(self) -> bool:
        return self.whole_absent is None

    def release_slice(self) -> None:
        """Back on the whole model with nothing applied, the slice freed (training needs the memory)."""
        if self.whole_absent:
            raise EnvironmentProblem(f"{self.spec.display} cannot be trained here: {self.whole_absent}")
        self.use("whole", replay=False)
        self.revert_patches()
        self.set_adapter(None)
        if self.slice_model is not None:
            self._parked.pop(id(self.slice_model), None)
        self.slice_model = None

    def _rebuild_adapter(self) -> None:
        """The adapter on the current model: the one parked on it when built with the same LoRA config (LoRA's
        injection costs seconds on an 8B model), else a new one."""
        from peft import get_peft_model

        parked, key = self._parked.pop(id(self.model), (None, None))
        if parked is not None and key == self._lora_key():
            self.set_adapter(parked)
            return
        if parked is not None:
            parked.unload()
        self.set_adapter(get_peft_model(self.model, self.lora_config()))

    def _lora_key(self) -> str:
        import json

        config = self.lora_config().to_dict()
        return json.dumps(config, sort_keys=True, default=lambda v: sorted(map(str, v)) if isinstance(v, (set, frozenset))
                          else str(v))

    def set_examples(self, examples: list[Example]) -> None:
        """Replace the data the checks run on; what was computed on the old data is dropped."""
        self.examples = examples
        self.invalidate()

    def set_adapter(self, peft_model) -> None:
        """The LoRA-wrapped model the checks after this one train through (None: drop it, unloading LoRA)."""
        if self.peft_model is not None and peft_model is not self.peft_model:
            self.peft_model.unload()
        self.peft_model = peft_model
        if peft_model is not None:
            self._adapter_at = len(self.applied)
        self.invalidate()

    def lora_config(self):
        """The LoraConfig of this setup, rewritten by the LoRA-config transforms applied so far."""
        from onboard.patches import get_patch, lora_config

        return lora_config(self.model, self.lora_targets, [get_patch(p) for p in self.applied],
                           r=self.lora_rank, alpha=self.lora_alpha)

    def tokenize(self, chats: list[list[dict[str, str]]]) -> list[Example]:
        """Chats as the checks and training see them: this session's template, labels and max_length."""
        template = self.chat_template or FALLBACK_TEMPLATE
        make = tokenize_seq2seq if self.task == "seq2seq" else tokenize_chat
        return [make(self.tokenizer, chat, template, self.max_length) for chat in chats]

    @property
    def seq2seq(self) -> bool:
        return self.task == "seq2seq"

    @property
    def position_start(self) -> int:
        """The first position the model gives a sample it runs alone, measured (forward.own_position_start): what
        packed rows number each sample from, and the packing collator's position_ids_start."""
        if self._position_start is None:
            from onboard.harness.forward import own_position_start

            shortest = min(self.examples, key=len)
            self._position_start = 0 if self.seq2seq else own_position_start(self.model, shortest, self.device,
                                                                              self.pad_id)
        return self._position_start

    @property
    def train_model(self):
        """The model as training sees it: LoRA-wrapped once the lora check has run."""
        return self.peft_model if self.peft_model is not None else self.model

    def threshold(self, name: str) -> float:
        """The value a check judges `name` against, at this session's dtype (onboard.harness.thresholds)."""
        return self.thresholds.get(name, str(self.dtype).removeprefix("torch."))

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def reference_losses(self, indices=None) -> dict[int, torch.Tensor]:
        """Per-token losses of examples run alone (all, or those of `indices`): each computed once on the
        current model and patches, shared until either changes."""
        from onboard.harness.forward import example_losses

        wanted = range(len(self.examples)) if indices is None else indices
        for i in wanted:
            if i not in self._reference:
                self._reference[i] = example_losses(self.train_model, self.examples[i], self.device)
        return {i: self._reference[i] for i in wanted}

    @property
    def logit_width(self) -> int:
        """How many classes the logits score (ln of it is the loss of a uniform guess), read off one forward:
        not every model exposes its output layer through get_output_embeddings()."""
        if self._logit_width is None:
            batch = self.probe_batch(1)
            with torch.no_grad():
                out = self.train_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                       use_cache=False, **({"labels": batch["labels"]} if self.seq2seq else {}))
            self._logit_width = int(out.logits.shape[-1])
        return self._logit_width

    def probe_batch(self, n: int = 1) -> dict[str, torch.Tensor]:
        """The n shortest examples as a padded, labelled batch: what patches probe a forward with."""
        from onboard.harness.forward import batch_tensors

        labelled = [ex for ex in self.examples if ex.n_trained] or self.examples  # a loss needs a labelled token
        return batch_tensors(sorted(labelled, key=len)[:n], self.device, self.pad_id)

    @contextmanager
    def attention(self, backend: str) -> Iterator[None]:
        """The training model on attention `backend` for the block (a comparison against eager), then back on the
        one it was on; raises ImportError or ValueError when the backend cannot load here."""
        from onboard.patches.attention import current_backend, restore_backend

        base = unwrap(self.train_model)
        old = current_backend(base)
        base.set_attn_implementation(backend)
        try:
            yield
        finally:
            restore_backend(base, old)

    def switch_attention(self, backend: str) -> None:
        """The training model on `backend` from now on, and the backend training asks for (ATTN001: the model
        loaded on a fallback, and the backend asked for runs after all); raises ImportError or ValueError."""
        unwrap(self.train_model).set_attn_implementation(backend)
        self.attn = backend
        self.invalidate()

    def patch_context(self, options: Mapping[str, str] | None = None) -> PatchContext:
        """What a patch applied in this session may read: the choices given so far (and `options`), and a probe."""
        return PatchContext(options={**self.patch_options, **(options or {})}, probe_batch=self.probe_batch)

    def apply_patch(self, patch, option: str | None = None) -> PatchHandle | None:
        """Apply a patch for the checks that follow (or for training); `option` is the choice a check made for it
        (MOE001's experts implementation, as the report's patch_options record it). A model patch changes the
        training model now; a LoRA-config transform drops the adapter, which is built again (by LORA001, or
        training) with the rewritten config. Returns the handle (None for a LoRA-config transform)."""
        from onboard.patches import is_lora_transform

        if patch.id in self.applied:
            return self.applied[patch.id]
        if is_lora_transform(patch):
            self.applied[patch.id] = None
            self.set_adapter(None)
        else:
            handle = patch.apply(self.train_model, self.patch_context({patch.id: option} if option else None))
            if option:
                self.patch_options[patch.id] = option
                handle.on_revert(lambda: self.patch_options.pop(patch.id, None))
            if handle.backend:  # the patch switched attention: the backend training asks for follows it
                asked = self.attn
                self.attn = handle.backend
                handle.on_revert(lambda: setattr(self, "attn", asked))
            self.applied[patch.id] = handle
        if not getattr(patch, "keeps_unpacked_outputs", False):
            self.invalidate()
        return self.applied[patch.id]

    def revert_patch(self, patch_id: str) -> None:
        """Take back one patch (a fix that did not verify must not shape the checks after it)."""
        if patch_id not in self.applied:
            return
        handle = self.applied.pop(patch_id)
        if handle is None:  # a LoRA-config transform: the adapter built with it goes too
            self.set_adapter(None)
        else:
            handle.revert()
        from onboard.patches import get_patch

        if not getattr(get_patch(patch_id), "keeps_unpacked_outputs", False):
            self.invalidate()

    def revert_patches(self) -> None:
        for patch_id in reversed(list(self.applied)):
            self.revert_patch(patch_id)

    def describe(self) -> dict:
        model = self.whole_model
        return {
            "id": self.spec.display,
            "source": self.spec.kind.value,
            "revision": self.spec.revision,
            "random_weights": self.spec.random_weights,
            "attention": self.attn or self.model.config._attn_implementation,
            "class": type(model).__name__,
            "model_type": model.config.model_type,
            "parameters": sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "data": str(self.data_path),
            "examples": len(self.examples),
            "setup_calls": self.setup_calls,
            "task": self.task,
            "position_start": self._position_start,  # measured where packing was probed (None: not measured)
            # where the code-path checks ran: the slice's layer map, or why the whole model ran them
            "slice": self.slice_map.to_dict() if self.slice_map is not None else {"reason": self.slice_reason},
        }
