"""Chat samples -> token ids with assistant-only labels and token kinds; packing into rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from onboard.harness.errors import BadInput

IGNORE = -100
BUILTIN_CHATS = Path(str(files("onboard.fixtures").joinpath("data/chat.jsonl")))

# Used when the tokenizer has no chat template (base models). Plain text turns; each assistant turn ends
# with the EOS token, as a base model saw at the end of documents in pre-training.
FALLBACK_TEMPLATE = (
    "{{ bos_token or '' }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + (eos_token or '') + '\n' }}"
    "{% elif message['role'] == 'system' %}{{ 'System: ' + message['content'] + '\n' }}"
    "{% else %}{{ 'User: ' + message['content'] + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)

# What each trained token is. Kinds let a loss be attributed: a base model's untrained chat tokens
# (template) read differently from a broken model (content).
PROMPT, CONTENT, TEMPLATE = 0, 1, 2
KIND_NAMES = {CONTENT: "content", TEMPLATE: "template"}

_ROLES = {"system", "user", "assistant"}


@dataclass
class Example:
    """One tokenized chat. labels[i] is the target of position i (IGNORE where not trained)."""

    input_ids: list[int]
    labels: list[int]
    kinds: list[int]
    truncated: bool = False
    # seq2seq (an encoder-decoder's sample): input_ids go to the encoder, labels are the decoder's targets, a
    # sequence of their own (kinds follow the labels); the loss is not shifted
    seq2seq: bool = False

    def __len__(self) -> int:
        return len(self.input_ids) + (len(self.labels) if self.seq2seq else 0)

    @property
    def n_trained(self) -> int:
        return sum(label != IGNORE for label in self.labels)


@dataclass
class PackedRow:
    """Several examples in one row; position_ids restart at `start` for each (0; RoBERTa-style embeddings number
    a sample from padding_idx + 1, which the session measures: ModelSession.position_start)."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    sample: list[int] = field(default_factory=list)  # index of the example each token came from
    start: int = 0

    def add(self, index: int, ex: Example) -> None:
        self.input_ids += ex.input_ids
        self.labels += ex.labels
        self.position_ids += list(range(self.start, self.start + len(ex)))
        self.sample += [index] * len(ex)


def data_file(path) -> Path:
    """`path` as a data file that is there (BadInput naming it otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"no such data file: {path}")
    return path


def read_chats(path: Path) -> list[list[dict[str, str]]]:
    """Read a JSONL file of {"messages": [{"role", "content"}, ...]}; errors name the line."""
    path = data_file(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read data file {path}: {exc}") from exc
    chats = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{where}: not valid JSON ({exc.msg})") from exc
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list) or not messages:
            raise BadInput(f"{where}: expected an object with a non-empty 'messages' list")
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
                raise BadInput(f"{where}: each message needs a role in {sorted(_ROLES)} and a string content")
        if not any(m["role"] == "assistant" for m in messages):
            raise BadInput(f"{where}: no assistant message, so nothing to train on")
        chats.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if not chats:
        raise BadInput(f"{path}: no chats in the file")
    return chats


def tokenize_chat(tokenizer, messages: list[dict[str, str]], template: str, max_length: int) -> Example:
    """Render with the chat template; label assistant turns only, each token tagged content or template."""

    def render(msgs, gen=False):
        return tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False, add_generation_prompt=gen)

    text = render(messages)
    spans = []  # (turn start, turn end, content start, content end) in characters
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before, through = render(messages[:k], gen=True), render(messages[: k + 1])
        if not (text.startswith(through) and through.startswith(before)):
            raise BadInput("the chat template does not render earlier turns the same way in longer chats")
        start = through.find(m["content"], len(before))
        if start < 0:
            raise BadInput("the chat template changes the assistant content; cannot label it")
        spans.append((len(before), len(through), start, start + len(m["content"])))

    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    kinds = []
    for tok_start, _ in offsets:
        kind = PROMPT
        for a0, a1, c0, c1 in spans:
            if a0 <= tok_start < a1:
                kind = CONTENT if c0 <= tok_start < c1 else TEMPLATE
        kinds.append(kind)
    # position i is trained to predict token i+1 in the shifted loss; labels hold the token itself,
    # and the first token can never be predicted.
    labels = [tid if kind != PROMPT else IGNORE for tid, kind in zip(ids, kinds)]
    if labels:
        labels[0] = IGNORE
    truncated = len(ids) > max_length
    return Example(ids[:max_length], labels[:max_length], kinds[:max_length], truncated)


def tokenize_seq2seq(tokenizer, messages: list[dict[str, str]], template: str, max_length: int) -> Example:
    """An encoder-decoder's sample: the chat up to its last reply, rendered with the generation prompt, to the
    encoder; the reply's tokens and the end-of-sequence token as the labels (the model shifts them into its
    decoder's input itself)."""
    last = max(k for k, m in enumerate(messages) if m["role"] == "assistant")
    prompt = tokenizer.apply_chat_template(messages[:last], chat_template=template, tokenize=False,
                                           add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply = tokenizer(messages[last]["content"], add_special_tokens=False)["input_ids"]
    kinds = [CONTENT] * len(reply)
    if tokenizer.eos_token_id is not None:
        reply, kinds = reply + [tokenizer.eos_token_id], kinds + [TEMPLATE]
    truncated = len(ids) > max_length or len(reply) > max_length
    return Example(ids[:max_length], reply[:max_length], kinds[:max_length], truncated, seq2seq=True)


def attention_span(config, max_length: int | None = None) -> int | None:
    """The widest sliding window or attention chunk the model's (text) config declares, in tokens, that a sample
    of at most `max_length` tokens can cross; None when there is none. Only sizes a probe: a sample must be longer
    than this for its window or chunk to matter, and training's samples are no longer than max_length."""
    text = config.get_text_config()
    spans = [v for v in (getattr(text, "sliding_window", None), getattr(text, "attention_chunk_size", None))
             if isinstance(v, int) and not isinstance(v, bool) and v > 0 and (max_length is None or v < max_length)]
    return max(spans, default=None)


def long_example(examples: list[Example], length: int) -> Example:
    """One sample of exactly `length` tokens: the data's samples one after another (labels and kinds kept), cut
    at `length`. What a probe uses where every sample of the data is shorter than a window it must cross.
    Seq2seq samples: the prompts and the replies each strung together (labels of `length` tokens, the decoder's
    window crossed)."""
    ids: list[int] = []
    labels: list[int] = []
    kinds: list[int] = []
    seq2seq = bool(examples) and examples[0].seq2seq
    while len(labels if seq2seq else ids) < length and any(len(ex) for ex in examples):
        for ex in examples:
            ids, labels, kinds = ids + ex.input_ids, labels + ex.labels, kinds + ex.kinds
    return Example(ids[:length], labels[:length], kinds[:length], truncated=True, seq2seq=seq2seq)


def pack(examples: list[Example], max_length: int, start: int = 0) -> list[PackedRow]:
    """Greedy packing in order: a new row starts when the next example does not fit; positions from `start`."""
    rows: list[PackedRow] = []
    current = PackedRow(start=start)
    for i, ex in enumerate(examples):
        if current.input_ids and len(current.input_ids) + len(ex) > max_length:
            rows.append(current)
            current = PackedRow(start=start)
        current.add(i, ex)
    if current.input_ids:
        rows.append(current)
    return rows
