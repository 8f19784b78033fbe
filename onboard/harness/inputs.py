"""What a model's training needs that onboard's text probes do not give it, read from the model itself.

A text-only training step can fail for two unlike reasons: the model is broken (a finding, FM-MODEL-FORWARD), or
the probe does not fit it: its forward asks for an input chat data has no counterpart for (a captioning model's
`pixel_values`, UDOP's `bbox`, PI0's `state`), or given text labels it has no next-token loss to train (MusicGen's
labels are audio codebooks; a block-diffusion model returns no loss). The second is not the architecture's fault
and not onboard's verdict to give: it is NOT_APPLICABLE, with what the model needs. The evidence is the model's
own: a required argument of its forward that the batch left out, a forward parameter (or config field) its error
names, a forward that runs without labels while its loss refuses text labels, or a loss of None given labels.
"""

from __future__ import annotations

import inspect
import re

# what a text batch gives a forward, or what every causal LM takes: never "an input text data lacks"
TEXT_INPUTS = frozenset({
    "input_ids", "attention_mask", "labels", "position_ids", "inputs_embeds", "use_cache", "past_key_values",
    "cache", "return_dict", "output_attentions", "output_hidden_states", "cache_position", "logits_to_keep",
    "token_type_ids", "decoder_input_ids", "decoder_attention_mask", "decoder_inputs_embeds", "decoder_position_ids",
    "head_mask", "decoder_head_mask", "cross_attn_head_mask", "encoder_outputs", "interpolate_pos_encoding",
    "num_items_in_batch", "self", "kwargs", "args",
})


def forward_parameters(model) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(type(model).forward).parameters)
    except (TypeError, ValueError):
        return {}


def _named(text: str, names) -> list[str]:
    """The names that `text` mentions as whole words (case-insensitive: UDOP says "Bbox is required")."""
    return [n for n in names if re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", text, re.IGNORECASE)]


def needs_from_error(model, batch: dict, exc: BaseException) -> str | None:
    """What the model asks for that the text batch lacks, as its own error says; None when the error names
    nothing of the kind (then a failing forward is a finding about the model)."""
    params = forward_parameters(model)
    cls = type(model).__name__
    text = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:400]}"
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in batch
                and n not in TEXT_INPUTS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if isinstance(exc, TypeError) and required and _named(str(exc), required):
        return f"{', '.join(required)}: required arguments of {cls}.forward that text data has no counterpart for"
    extra = [n for n in params if n not in TEXT_INPUTS and n not in batch]
    named = _named(str(exc), extra)
    if named:
        return f"{' or '.join(named)}: inputs text data lacks, as {cls}'s forward says ({text})"
    config = getattr(model, "config", None)
    fields = [m for m in re.findall(r"config\.([A-Za-z_][A-Za-z0-9_]*)", str(exc)) if hasattr(config, m)]
    if fields:
        return (f"inputs shaped as its config's {', '.join(dict.fromkeys(fields))} requires, which onboard's "
                f"variable-length text probes are not ({text})")
    return None


def needs_beyond_text_labels(model, batch: dict) -> str | None:
    """Given a labelled text batch the training step cannot run or has no loss: whether that is because the model
    trains on something else (its forward runs without labels; its loss refuses text labels or is None). None when
    the forward without labels fails too, or the labelled forward gives a loss (then nothing is shown here)."""
    import torch

    unlabelled = {k: v for k, v in batch.items() if k != "labels"}
    cls = type(model).__name__
    with torch.no_grad():
        try:
            out = model(**batch, use_cache=False)
        except Exception as exc:  # noqa: BLE001 - the labelled forward's failure is what is being explained
            try:
                model(**unlabelled, use_cache=False)
            except Exception:  # noqa: BLE001 - without labels it fails too: not the labels' fault
                return None
            text = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
            extra = [n for n in forward_parameters(model) if n not in TEXT_INPUTS and n not in batch]
            pixels = _runs_with_pixels(model, batch) if "pixel_values" in extra else False
            if pixels:
                return (f"pixel_values: {cls}'s loss needs image positions (without them its loss fails on text "
                        f"labels: {text}; with pixel_values the labelled step runs)")
            also = f"; its forward also takes {', '.join(extra[:4])}" if extra else ""
            return f"labels of another kind than text tokens: {cls}'s forward runs without labels, its loss fails on text labels ({text}){also}"
        if getattr(out, "loss", None) is None:
            return (f"an objective other than labelled next tokens: given labels, {cls}'s forward returns no loss "
                    "(what the Trainer would train on)")
    return None


def _runs_with_pixels(model, batch: dict) -> bool:
    """Whether the labelled forward runs once it is given images of the shape its vision config states."""
    import torch

    config = getattr(model, "config", None)
    vision = getattr(config, "vision_config", None) or config
    size = getattr(vision, "image_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    if not isinstance(size, int):
        return False
    channels = getattr(vision, "num_channels", 3) or 3
    ids = batch["input_ids"]
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    pixels = torch.randn(ids.shape[0], channels, size, size, generator=torch.Generator().manual_seed(0)).to(ids.device, dtype)
    try:
        with torch.no_grad():
            out = model(**batch, pixel_values=pixels, use_cache=False)
    except Exception:  # noqa: BLE001 - pixels of this shape do not run it either: nothing shown
        return False
    return getattr(out, "loss", None) is not None


def objective(model, tokenizer) -> str:
    """"seq2seq" where a forward given labels of another length than its input returns logits that follow the
    labels (an encoder-decoder: the input goes to the encoder, the labels, shifted, to the decoder); else
    "causal" (a causal LM's loss refuses such labels, its logits follow the input)."""
    import torch

    words = tokenizer("one two three four five six seven eight", add_special_tokens=False)["input_ids"]
    device = next(model.parameters()).device
    ids = torch.tensor([words[:6]], device=device)
    labels = torch.tensor([words[-3:]], device=device)
    try:
        with torch.no_grad():
            out = model(input_ids=ids, labels=labels, use_cache=False, **decoder_inputs(model, labels))
    except Exception:  # noqa: BLE001 - refuses labels of another length: not an encoder-decoder
        return "causal"
    logits = getattr(out, "logits", None)
    return "seq2seq" if logits is not None and logits.dim() == 3 and logits.shape[1] == labels.shape[1] else "causal"


def noncausal_mask_origin(model, ids) -> str | None:
    """Where a model that attends to later tokens builds the mask that lets it: the attention mask its layers are
    given (a [.., T, T] tensor passed as `attention_mask`) is captured, and the function of the model's own source
    file that returned it (the same values) is named with its file and line. None when no layer is given a square
    mask that lets a position see a later one (the non-causality is elsewhere, e.g. a flag the kernel reads)."""
    import sys

    import torch

    source = inspect.getsourcefile(type(model))
    length = ids.shape[-1]
    masks: list = []

    def square(t) -> bool:  # a [.., S, S] mask over at least the sample (a model may add prompt positions)
        return torch.is_tensor(t) and t.dim() >= 2 and t.shape[-1] == t.shape[-2] >= length

    def capture(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None:
            # positionally only a boolean or integer mask: a float [.., S, S] could be hidden states of width S
            mask = next((a for a in args if square(a) and not a.is_floating_point()), None)
        if square(mask) and not masks:
            masks.append(mask.detach().clone())

    returns: list = []  # (qualname, first line, returned tensor) of the model's own functions, in order

    def profile(frame, event, arg):
        if event == "return" and frame.f_code.co_filename == source and square(arg):
            returns.append((frame.f_code.co_qualname, frame.f_code.co_firstlineno, arg.detach().clone()))

    hooks = [m.register_forward_pre_hook(capture, with_kwargs=True) for m in model.modules() if m is not model]
    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    except Exception:  # noqa: BLE001 - nothing to name
        return None
    finally:
        sys.setprofile(previous)
        for hook in hooks:
            hook.remove()
    if not masks:
        return None
    mask = masks[0]
    size = mask.shape[-1]
    allowed = mask.bool() if not mask.is_floating_point() else mask > torch.finfo(mask.dtype).min / 2
    if not allowed.reshape(-1, size, size).triu(1).any():
        return None  # the layers' mask is causal: not where the model looks ahead
    for qualname, line, value in returns:
        if value.shape[-2:] == mask.shape[-2:] and torch.equal(value.reshape(-1, size, size)[:1].to(mask.dtype),
                                                                mask.reshape(-1, size, size)[:1]):
            from pathlib import Path

            return f"{qualname} ({Path(source).name}:{line}) builds the mask that lets a position see later ones"
    return None


def decoder_inputs(model, labels) -> dict:
    """What DataCollatorForSeq2Seq(model=model) adds to a batch: the decoder's input built from the labels by the
    model's own prepare_decoder_input_ids_from_labels, where it has one (FSMT's forward otherwise feeds its
    decoder the shifted encoder input); {} where it has none (the forward shifts the labels itself)."""
    prepare = getattr(model, "prepare_decoder_input_ids_from_labels", None)
    return {"decoder_input_ids": prepare(labels=labels)} if callable(prepare) else {}


def feed_decoder_from_labels(model):
    """A forward pre-hook that gives every labelled batch without a decoder input the one decoder_inputs() builds, as
    the seq2seq collator does; returns the hook's handle (session-long: the checks and training batches alike)."""
    def hook(module, args, kwargs):
        labels = kwargs.get("labels")
        if labels is None or kwargs.get("decoder_input_ids") is not None or kwargs.get("decoder_inputs_embeds") is not None:
            return None
        kwargs.update(decoder_inputs(module, labels))
        return args, kwargs

    return model.register_forward_pre_hook(hook, with_kwargs=True)
