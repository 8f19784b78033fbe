"""Loading a model and its tokenizer, one loader per kind of source (LOADERS), and the hub's errors turned into
one-line messages with exit codes. The session asks `load(request)`; nothing here keeps state after it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from onboard.harness.errors import BadInput, EnvironmentProblem
from onboard.harness.spec import ModelSpec, SourceKind


@dataclass
class Loading:
    """One load: what was asked, and what the loaders found on the way."""

    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype
    attn: str | None
    progress: Callable[[str], None] = lambda _: None
    attn_load_error: str | None = None  # the asked backend's kernel could not load; loaded with sdpa instead
    loading_info: dict[str, list[str]] | None = field(default=None)  # from_pretrained's missing/unexpected weights
    setup_calls: list[str] = field(default_factory=list)  # the model's own setup calls made (SETUP_CALLS)
    slice_only: bool = False  # --slice only: the whole model is not loaded, only its layer-complete slice
    # why the whole model was not loaded (--slice only, or its weights do not fit the card): it is then built on the
    # meta device, and only its layer-complete slice is built on the device, its weights from `slice_weights`
    whole_absent: str | None = None
    # where the slice's weights come from when the whole model is absent: (checkpoint, from_pretrained keywords);
    # None: a model with random weights (the slice's own random weights)
    slice_weights: tuple[str, dict] | None = None

    def with_attn(self, make):
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

    def place(self, model):
        model.to(self.device)
        model.eval()  # measurements run without dropout; gradients still flow
        self.setup_calls = required_setup(model)
        return model


# the share of the card's free memory a config-shaped model's weights may take for the whole model to be built; the
# rest is for the checks' activations and gradients (an 8B shape in bf16 is 15 GiB of an 80 GB card's ~79 free)
WHOLE_SHARE = 0.8

# Calls a model's own API says must precede its forward, as (method, the argument from its config). X-MOD's forward
# refuses text with no language ("Input language unknown. Please call `XmodPreTrainedModel.set_default_language()`"):
# its first configured language adapter is the one a fine-tune on one language sets.
SETUP_CALLS = {
    "set_default_language": lambda config: None if getattr(config, "default_language", None) is not None
    else (list(getattr(config, "languages", None) or []) or [None])[0],
}


def required_setup(model) -> list[str]:
    """Make the setup calls `model` needs (SETUP_CALLS) and say which, as code a user can run."""
    done = []
    for method, argument_of in SETUP_CALLS.items():
        if callable(getattr(model, method, None)):
            argument = argument_of(model.config)
            if argument is not None:
                getattr(model, method)(argument)
                done.append(f"model.{method}({argument!r})")
    return done


def load(loading: Loading):
    """(tokenizer, model) for the spec, through the loader of its kind."""
    try:
        return LOADERS[loading.spec.kind](loading)
    except torch.OutOfMemoryError as exc:
        raise EnvironmentProblem(f"out of GPU memory while loading {loading.spec.display}") from exc
    except MemoryError as exc:
        raise EnvironmentProblem(f"out of memory while loading {loading.spec.display}") from exc


def tiny_auto(arch: str):
    """The auto class tiny:ARCH is built from: its ForCausalLM class; else (llava, qwen2_vl, ...) its
    ForConditionalGeneration model, as a multimodal fine-tune would train it; else (T5, LED, M2M100: text-to-text
    classes in neither mapping) its seq2seq LM, which the session probes as seq2seq. The audits build the same."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForSeq2SeqLM
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)

    if arch in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return AutoModelForCausalLM
    return AutoModelForImageTextToText if arch in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES else AutoModelForSeq2SeqLM


def load_tiny(loading: Loading):
    from onboard.harness.sources import build_tiny, config_for, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    arch, _, layers = loading.spec.target.partition(":")
    loading.progress(f"Building tiny {arch} with random weights")
    auto = tiny_auto(arch)

    def make(config):
        try:
            cls = auto._model_mapping[type(config)]
        except KeyError:
            raise BadInput(f"{loading.spec.display} (model_type {config.model_type}) is not a causal LM: "
                           "transformers has no ForCausalLM or ForConditionalGeneration class for it") from None
        return loading.with_attn(lambda attn: cls._from_config(config_for(cls, config), dtype=loading.dtype,
                                                               attn_implementation=attn))

    return tokenizer, loading.place(build_tiny(arch, len(tokenizer), make, layers=int(layers) if layers else None))


def load_config(loading: Loading):
    """A released model's shape with random weights, built straight on the target device: the parameters
    are allocated and initialised there, so an 8B shape never exists on the CPU."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from onboard.harness.sources import tiny_tokenizer

    path = Path(loading.spec.target)
    try:
        fields = json.loads(path.read_text())
        fields = {k: v for k, v in fields.items() if not k.startswith("_")}
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    except (OSError, ValueError, KeyError) as exc:
        raise BadInput(f"cannot read {path} as a model config: {exc}") from exc
    # the model's own tokenizer when it sits beside the config; else the built-in one (ids < vocab)
    own = (path.parent / "tokenizer.json").is_file() or (path.parent / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(path.parent) if own else tiny_tokenizer()
    loading.progress(f"Building {loading.spec.display} with random weights on {loading.device}")

    def make(attn):
        meta = _meta_unless_it_fits(loading, lambda: AutoModelForCausalLM.from_config(
            config, dtype=loading.dtype, attn_implementation=attn))
        if meta is not None:
            return meta
        with torch.device(loading.device):
            return AutoModelForCausalLM.from_config(config, dtype=loading.dtype, attn_implementation=attn)

    model = _as_causal_lm(lambda: loading.with_attn(make), loading.spec.display, config)
    return tokenizer, _placed_or_meta(loading, model)


def _meta_unless_it_fits(loading: Loading, build):
    """The model built on the meta device by `build()` when the whole model is not to be loaded (--slice only, or
    its weights would take more than WHOLE_SHARE of the card's free memory), saying why in `whole_absent`; else None."""
    if not loading.slice_only and loading.device.type != "cuda":
        return None
    with torch.device("meta"):
        meta = build()
    if loading.slice_only:
        loading.whole_absent = "--slice only: the whole model was not loaded"
        return meta
    need = sum(p.numel() * p.element_size() for p in meta.parameters())
    free = torch.cuda.mem_get_info(loading.device)[0]
    if need <= WHOLE_SHARE * free:
        return None
    loading.whole_absent = (f"the whole model's weights take {need / 2**30:.1f} GiB, more than {WHOLE_SHARE:.0%} of "
                            f"this card's {free / 2**30:.1f} GiB free (training it needs several cards, or offloading)")
    loading.progress(f"{loading.spec.display}: {loading.whole_absent}; its layer-complete slice only is built")
    return meta


def _placed_or_meta(loading: Loading, model):
    if loading.whole_absent:  # on the meta device: nothing to place; the model's setup calls are still made
        model.eval()
        loading.setup_calls = required_setup(model)
        return model
    return loading.place(model)


def load_fault(loading: Loading):
    from onboard.harness.sources import fault as fault_named

    fault = fault_named(loading.spec.target)
    loading.progress(f"Building fault model {fault.name}: {fault.description}")
    built = fault.build(loading.dtype, loading.with_attn, loading.progress)
    if isinstance(built, Path):  # a checkpoint folder with the fault in it: loaded as users load theirs
        return load_pretrained(loading, str(built), local=True)
    tokenizer, model = built
    return tokenizer, loading.place(model)


def load_embedded(loading: Loading):
    from onboard.harness.gguf import embedded_folder

    return load_pretrained(loading, str(embedded_folder(loading.spec.target, loading.progress)), local=True)


def load_gguf(loading: Loading):
    from onboard.harness.gguf import converted_folder

    return load_pretrained(loading, str(converted_folder(Path(loading.spec.target), loading.progress)), local=True)


def load_local(loading: Loading):
    return load_pretrained(loading, loading.spec.target, local=True)


def load_hub(loading: Loading):
    _fail_fast_offline(loading.spec)
    return load_pretrained(loading, loading.spec.target, local=False)


LOADERS: dict[SourceKind, Callable[[Loading], tuple]] = {
    SourceKind.TINY: load_tiny,
    SourceKind.CONFIG: load_config,
    SourceKind.FAULT: load_fault,
    SourceKind.EMBEDDED: load_embedded,
    SourceKind.GGUF: load_gguf,
    SourceKind.LOCAL: load_local,
    SourceKind.HUB: load_hub,
}
assert set(LOADERS) == set(SourceKind), "every kind of source has its loader"


def load_pretrained(loading: Loading, target: str, local: bool):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = loading.spec
    hub = dict(revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    loading.progress(f"Loading config and tokenizer of {spec.display}")
    config = _hub_call(lambda: AutoConfig.from_pretrained(target, **hub), spec.display)
    tokenizer = _hub_call(lambda: AutoTokenizer.from_pretrained(target, **hub), spec.display)
    loading.progress(f"Loading weights of {spec.display}")
    if spec.random_weights:
        make = lambda attn: AutoModelForCausalLM.from_config(  # noqa: E731
            config, dtype=loading.dtype, attn_implementation=attn, trust_remote_code=spec.trust_remote_code)
    else:
        def make(attn):
            meta = _meta_unless_it_fits(loading, lambda: AutoModelForCausalLM.from_config(
                config, dtype=loading.dtype, attn_implementation=attn, trust_remote_code=spec.trust_remote_code))
            if meta is not None:  # the slice's weights are read from the checkpoint, only those of its layers
                loading.slice_weights = (target, {**hub, "attn_implementation": attn})
                return meta
            model, info = _hub_call(lambda: AutoModelForCausalLM.from_pretrained(
                target, config=config, dtype=loading.dtype, attn_implementation=attn, output_loading_info=True,
                **hub), spec.display)
            loading.loading_info = {k: sorted(v) for k, v in info.items() if k != "error_msgs"}
            return model
    model = _as_causal_lm(lambda: loading.with_attn(make), spec.display, config)
    return tokenizer, _placed_or_meta(loading, model)


def _fail_fast_offline(spec: ModelSpec) -> None:
    """A hub id that is not in the local cache while the hub cannot be reached: say so at once, instead of
    letting the hub client spend half a minute on retries."""
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(spec.target, "config.json", revision=spec.revision)
    if isinstance(cached, str):
        return  # in the cache: from_pretrained finds it, online or not
    if constants.HF_HUB_OFFLINE:
        raise EnvironmentProblem(f"{spec.display} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # reachability through a proxy is the hub client's to find out
    import socket
    from urllib.parse import urlparse

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3).close()
    except OSError:
        raise EnvironmentProblem(
            f"{spec.display} is not in the local Hugging Face cache and {url.hostname} cannot be reached "
            "(offline? HF_HUB_OFFLINE=1 makes this fail without trying)") from None


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
