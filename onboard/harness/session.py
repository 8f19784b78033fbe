"""ModelSession: loads model and tokenizer once, owns the data sample, applies and reverts patches."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

from onboard.harness.data import BUILTIN_CHATS, FALLBACK_TEMPLATE, Example, read_chats, tokenize_chat
from onboard.fixtures.models import cache_dir
from onboard.harness.errors import BadInput, EnvironmentProblem
from onboard.harness.spec import ModelSpec, SourceKind
from onboard.harness.training import DEFAULTS
from onboard.harness.thresholds import Thresholds

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
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

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str | None = None,
        dtype: str | None = None,
        attn: str | None = None,
        data: Path | None = None,
        max_length: int = DEFAULTS.max_length,
        pack_length: int = 512,
        lora_targets: list[str] | None = None,
        chat_template: str | None = None,
        seed: int = 0,
        max_examples: int | None = None,
        thresholds: Thresholds | None = None,
        lora_rank: int = DEFAULTS.lora_rank,
        lora_alpha: int = DEFAULTS.lora_alpha,
        gradient_checkpointing: bool | None = DEFAULTS.gradient_checkpointing,
        progress: Callable[[str], None] = lambda _: None,
    ):
        self.spec = spec
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.attn = attn  # the attention backend training asks for; ATTN001 checks it can run
        self.attn_load_error: str | None = None
        # what from_pretrained reported: weights the checkpoint lacks (initialised at random), unused, reshaped
        self.loading_info: dict[str, list[str]] | None = None
        self.data_path = Path(data) if data else BUILTIN_CHATS
        self.max_length = max_length
        self.pack_length = pack_length
        self.lora_targets = lora_targets
        self.seed = seed
        self.thresholds = thresholds or Thresholds()
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.gradient_checkpointing = gradient_checkpointing  # None: on with CUDA (harness.training)
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.peft_model = None  # set by the lora check; later checks train through it
        self.applied: dict[str, object] = {}  # patch id -> handle, in the order applied
        self._reference: dict[int, torch.Tensor] = {}  # example index -> its per-token losses run alone
        self._logit_width: int | None = None

        if spec.kind is SourceKind.FAULT:  # a fault may need its trigger: LoRA targets or a backend
            from onboard.fixtures.faults import get_fault

            fault = get_fault(spec.target)
            self.lora_targets = self.lora_targets or fault.lora_targets
            self.attn = self.attn or fault.attn
        chats = read_chats(self.data_path)  # bad data (any line of it) fails before a slow load
        self.n_chats = len(chats)
        chats = chats[:max_examples] if max_examples else chats  # the checks' sample of a large file
        start = time.perf_counter()
        self.tokenizer, self.model = self._load()
        self.timings["model_load"] = time.perf_counter() - start
        start = time.perf_counter()
        if chat_template:
            self.tokenizer.chat_template = chat_template
        self.chat_template = getattr(self.tokenizer, "chat_template", None)
        self.template_is_fallback = not self.chat_template
        self.examples: list[Example] = self.tokenize(chats)
        self.timings["tokenize"] = time.perf_counter() - start

    def set_examples(self, examples: list[Example]) -> None:
        """Replace the data the checks run on; what was computed on the old data is dropped."""
        self.examples = examples
        self._reference = {}

    def tokenize(self, chats: list[list[dict[str, str]]]) -> list[Example]:
        """Chats as the checks and training see them: this session's template, labels and max_length."""
        template = self.chat_template or FALLBACK_TEMPLATE
        return [tokenize_chat(self.tokenizer, chat, template, self.max_length) for chat in chats]

    # ---- loading ----------------------------------------------------------------------------------

    def _load(self):
        spec = self.spec
        torch.manual_seed(self.seed)
        try:
            if spec.kind is SourceKind.TINY:
                return self._load_tiny()
            if spec.kind is SourceKind.FAULT:
                return self._load_fault()
            if spec.kind is SourceKind.CONFIG:
                return self._load_config()
            if spec.kind in (SourceKind.EMBEDDED, SourceKind.GGUF):
                folder = self._converted_gguf()
                return self._load_pretrained(str(folder), local=True)
            return self._load_pretrained(spec.target, local=spec.kind is SourceKind.LOCAL)
        except torch.OutOfMemoryError as exc:
            raise EnvironmentProblem(f"out of GPU memory while loading {spec.display}") from exc
        except MemoryError as exc:
            raise EnvironmentProblem(f"out of memory while loading {spec.display}") from exc

    def _load_tiny(self):
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        from onboard.fixtures.models import tiny_tokenizer
        from onboard.fixtures.tiny import build_tiny, config_for

        tokenizer = tiny_tokenizer()
        arch = self.spec.target
        self.progress(f"Building tiny {arch} with random weights")
        # image-text-to-text architectures (llava, qwen2_vl, ...) have no ForCausalLM class: the text checks
        # run on their ForConditionalGeneration model, as a multimodal fine-tune would train it
        auto = AutoModelForCausalLM if arch in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else AutoModelForImageTextToText

        def make(config):
            try:
                cls = auto._model_mapping[type(config)]
            except KeyError:
                raise BadInput(f"{self.spec.display} (model_type {config.model_type}) is not a causal LM: "
                               "transformers has no ForCausalLM or ForConditionalGeneration class for it") from None
            return self._with_attn(lambda attn: cls._from_config(config_for(cls, config), dtype=self.dtype,
                                                                 attn_implementation=attn))

        return tokenizer, self._place(build_tiny(arch, len(tokenizer), make))

    def _load_config(self):
        """A released model's shape with random weights, built straight on the target device: the
        parameters are allocated and initialised there, so an 8B shape never exists on the CPU."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from onboard.fixtures.models import tiny_tokenizer

        path = Path(self.spec.target)
        try:
            fields = json.loads(path.read_text())
            fields = {k: v for k, v in fields.items() if not k.startswith("_")}
            config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        except (OSError, ValueError, KeyError) as exc:
            raise BadInput(f"cannot read {path} as a model config: {exc}") from exc
        # the model's own tokenizer when it sits beside the config; else the built-in one (ids < vocab)
        own = (path.parent / "tokenizer.json").is_file() or (path.parent / "tokenizer_config.json").is_file()
        tokenizer = AutoTokenizer.from_pretrained(path.parent) if own else tiny_tokenizer()
        self.progress(f"Building {self.spec.display} with random weights on {self.device}")

        def make(attn):
            with torch.device(self.device):
                return AutoModelForCausalLM.from_config(config, dtype=self.dtype, attn_implementation=attn)

        model = _as_causal_lm(lambda: self._with_attn(make), self.spec.display, config)
        return tokenizer, self._place(model)

    def _load_fault(self):
        from onboard.fixtures.faults import get_fault

        fault = get_fault(self.spec.target)
        self.progress(f"Building fault model {fault.name}: {fault.description}")
        built = fault.build(self.dtype, lambda make: self._with_attn(make), self.progress)
        if isinstance(built, Path):  # a checkpoint folder with the fault in it: loaded as users load theirs
            return self._load_pretrained(str(built), local=True)
        tokenizer, model = built
        return tokenizer, self._place(model)

    def _with_attn(self, make):
        """make(attn) with the requested backend; if its kernel cannot load here, with sdpa instead,
        remembering why, so ATTN001 reports it and proposes the fallback rather than the run dying."""
        try:
            return make(self.attn)
        except ImportError as exc:
            if self.attn in (None, "eager", "sdpa"):
                raise
            self.attn_load_error = str(exc).splitlines()[0]
            self.progress(f"{self.attn} cannot load here; loading with sdpa (ATTN001 reports it)")
            return make("sdpa")

    def _load_pretrained(self, target: str, local: bool):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        hub = dict(revision=self.spec.revision, trust_remote_code=self.spec.trust_remote_code)
        self.progress(f"Loading config and tokenizer of {self.spec.display}")
        config = _hub_call(lambda: AutoConfig.from_pretrained(target, **hub), self.spec.display)
        tokenizer = _hub_call(lambda: AutoTokenizer.from_pretrained(target, **hub), self.spec.display)
        self.progress(f"Loading weights of {self.spec.display}")
        if self.spec.random_weights:
            make = lambda attn: AutoModelForCausalLM.from_config(  # noqa: E731
                config, dtype=self.dtype, attn_implementation=attn, trust_remote_code=self.spec.trust_remote_code)
        else:
            def make(attn):
                model, info = _hub_call(lambda: AutoModelForCausalLM.from_pretrained(
                    target, config=config, dtype=self.dtype, attn_implementation=attn, output_loading_info=True,
                    **hub), self.spec.display)
                self.loading_info = {k: sorted(v) for k, v in info.items() if k != "error_msgs"}
                return model
        model = _as_causal_lm(lambda: self._with_attn(make), self.spec.display, config)
        return tokenizer, self._place(model)

    def _place(self, model):
        model.to(self.device)
        model.eval()  # measurements run without dropout; gradients still flow
        return model

    def _converted_gguf(self) -> Path:
        if self.spec.kind is SourceKind.EMBEDDED:
            return embedded_folder(self.spec.target, self.progress)
        gguf = Path(self.spec.target)
        st = gguf.stat()
        folder = cache_dir() / "converted" / f"{gguf.stem}-{st.st_size}-{st.st_mtime_ns}"
        if not (folder / "onboard-source.json").exists():
            self.progress(f"Converting {gguf.name} to a plain checkpoint (once; later runs load the cached copy)")
            convert_gguf(gguf, folder)
        return folder

    # ---- state the checks share -----------------------------------------------------------------

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
        """Per-token losses of examples run alone (all, or those of `indices`): each computed once, shared."""
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
                                       use_cache=False)
            self._logit_width = int(out.logits.shape[-1])
        return self._logit_width

    def probe_batch(self, n: int = 1) -> dict[str, torch.Tensor]:
        """The n shortest examples as a padded, labelled batch: what patches probe a forward with."""
        from onboard.harness.forward import batch_tensors

        return batch_tensors(sorted(self.examples, key=len)[:n], self.device, self.pad_id)

    def apply_patch(self, patch) -> None:
        """Apply a patch to the training model and keep it applied for the checks that follow."""
        if patch.id in self.applied:
            return
        self.applied[patch.id] = patch.apply(self.train_model, self)

    def revert_patch(self, patch_id: str) -> None:
        """Take back one patch (a fix that did not verify must not shape the checks after it)."""
        handle = self.applied.pop(patch_id, None)
        if handle is not None:
            handle.revert()

    def revert_patches(self) -> None:
        for handle in reversed(list(self.applied.values())):
            handle.revert()
        self.applied.clear()

    def describe(self) -> dict:
        model = self.model
        return {
            "id": self.spec.display,
            "source": self.spec.kind.value,
            "revision": self.spec.revision,
            "random_weights": self.spec.random_weights,
            "attention": self.attn or self.model.config._attn_implementation,
            "class": type(model).__name__,
            "model_type": model.config.model_type,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "data": str(self.data_path),
            "examples": len(self.examples),
        }


def embedded_folder(name: str, progress: Callable[[str], None] = lambda _: None) -> Path:
    """The embedded model `name` dequantized once into a plain HF folder in onboard's cache (FM-LOAD-GGUF)."""
    from onboard.fixtures.models import EMBEDDED

    embedded = EMBEDDED[name]
    folder = cache_dir() / "converted" / embedded.sha256[:16]
    if not (folder / "onboard-source.json").exists():
        gguf = embedded.path(progress)
        progress(f"Converting {gguf.name} to a plain checkpoint (once; later runs load the cached copy)")
        convert_gguf(gguf, folder)
    return folder


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantize a GGUF fully and save it without the quantizer, so it is trainable and saveable."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = folder.with_name(folder.name + ".partial")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as exc:
        raise BadInput(f"cannot load GGUF {gguf.name}: {exc}") from exc
    model.hf_quantizer = None  # a GGUF load keeps its quantizer, which blocks Trainer and save_pretrained
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    # the tokenizer must survive the round trip through its saved class, which is what later runs load
    repaired = chars_per_token(AutoTokenizer.from_pretrained(tmp), _PROBE) < CHAR_LEVEL
    if repaired:
        _rebuild_gguf_tokenizer(gguf, tokenizer).save_pretrained(tmp)
    (tmp / "onboard-source.json").write_text(json.dumps({"gguf": str(gguf), "tokenizer_rebuilt": repaired}))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.replace(folder)


_PROBE = "The quick brown fox jumps over the lazy dog, and then it runs back home again."
CHAR_LEVEL = 1.5  # chars per token below this: the tokenizer splits words into single characters


def chars_per_token(tokenizer, text: str) -> float:
    return len(text) / max(1, len(tokenizer(text, add_special_tokens=False)["input_ids"]))


def _rebuild_gguf_tokenizer(gguf: Path, broken):
    """Some GGUF tokenizers (SentencePiece BPE, e.g. Gemma 3) load into a BPE class without merges and
    tokenize character by character. Rebuild BPE merges from the GGUF vocabulary's scores (a piece merges
    from two pieces of the vocabulary, higher score first), and keep control tokens whole."""
    from tokenizers import AddedToken, models
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.ggml import convert_gguf_tokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    info = load_gguf_checkpoint(str(gguf), return_tensors=False)
    backend, _ = convert_gguf_tokenizer(info["config"]["model_type"], info["tokenizer"])
    pieces = json.loads(backend.to_str())["model"]["vocab"]  # [[piece, score], ...] in id order
    vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
    merges = sorted(
        (-score, vocab[piece[:i]], vocab[piece[i:]], piece[:i], piece[i:])
        for piece, score in pieces for i in range(1, len(piece))
        if piece[:i] in vocab and piece[i:] in vocab
    )
    backend.model = models.BPE(vocab=vocab, merges=[(a, b) for *_, a, b in merges], byte_fallback=True, fuse_unk=True)
    kinds = info["tokenizer"].get("token_type", [])
    control = [AddedToken(pieces[i][0], special=True, normalized=False) for i, k in enumerate(kinds) if k in (3, 4)]
    backend.add_special_tokens(control)
    specials = {k: getattr(broken, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")
                if getattr(broken, k, None)}
    rebuilt = PreTrainedTokenizerFast(tokenizer_object=backend, **specials)
    rebuilt.chat_template = broken.chat_template
    return rebuilt


def _hub_call(fn, name: str):
    """Run a from_pretrained call; turn the hub's errors into one-line messages with exit codes."""
    from huggingface_hub import errors as hf

    try:
        return fn()
    except OSError as exc:
        chain = _causes(exc)
        if any(isinstance(e, hf.GatedRepoError) for e in chain):
            raise BadInput(f"{name} is a gated repository: accept its terms on the hub and log in") from exc
        if any(isinstance(e, hf.RevisionNotFoundError) for e in chain):
            raise BadInput(f"{name}: revision not found") from exc
        if any(isinstance(e, hf.RepositoryNotFoundError) for e in chain):
            raise BadInput(f"{name}: no such model repository (or it is private)") from exc
        if any(isinstance(e, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled)) for e in chain):
            raise EnvironmentProblem(f"{name} is not in the local Hugging Face cache and the hub cannot be reached") from exc
        raise BadInput(f"cannot load {name}: {str(exc).splitlines()[0]}") from exc


def _as_causal_lm(make, name: str, config):
    try:
        return make()
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise BadInput(
                f"{name} (model_type {config.model_type}) is not a causal LM: "
                "transformers has no ForCausalLM or ForConditionalGeneration class for it"
            ) from exc
        raise


def _causes(exc: BaseException) -> list[BaseException]:
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen
