import json

import pytest

from onboard.fixtures.models import tiny_tokenizer
from onboard.harness.data import (
    BUILTIN_CHATS, CONTENT, FALLBACK_TEMPLATE, IGNORE, PROMPT, TEMPLATE, pack, read_chats, tokenize_chat,
)
from onboard.harness.errors import BadInput

CHAT = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
]


def test_builtin_chats_are_varied():
    chats = read_chats(BUILTIN_CHATS)
    assert len(chats) >= 16
    assert any(sum(m["role"] == "assistant" for m in c) > 1 for c in chats)  # multi-turn
    assert any(c[0]["role"] == "system" for c in chats)


@pytest.mark.parametrize("line, message", [
    ("not json", "not valid JSON"),
    ('{"text": "x"}', "'messages' list"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', "role"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant"),
])
def test_malformed_lines_name_their_line(tmp_path, line, message):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"messages": CHAT}) + "\n\n" + line + "\n")
    with pytest.raises(BadInput, match=rf"d.jsonl:3: .*{message}"):
        read_chats(path)


@pytest.mark.parametrize("template", [None, FALLBACK_TEMPLATE])
def test_labels_cover_exactly_the_assistant_turns(template):
    tok = tiny_tokenizer()
    ex = tokenize_chat(tok, CHAT, template or tok.chat_template, max_length=1024)
    content = [t for t, k in zip(ex.input_ids, ex.kinds) if k == CONTENT]
    assert tok.decode(content) == "Hello! How can I help?Blue."
    assert all((lab == IGNORE) == (k == PROMPT) for lab, k in zip(ex.labels, ex.kinds))
    template_tokens = tok.decode([t for t, k in zip(ex.input_ids, ex.kinds) if k == TEMPLATE])
    assert "<|im_end|>" in template_tokens and "Name a colour" not in template_tokens


def test_pack_restarts_positions_and_keeps_every_token():
    tok = tiny_tokenizer()
    examples = [tokenize_chat(tok, c, tok.chat_template, 1024) for c in read_chats(BUILTIN_CHATS)]
    rows = pack(examples, 256)
    assert sum(len(r.input_ids) for r in rows) == sum(len(e) for e in examples)
    row = next(r for r in rows if len(set(r.sample)) > 1)
    starts = [i for i, p in enumerate(row.position_ids) if p == 0]
    assert len(starts) == len(set(row.sample)) and all(row.labels[i] == IGNORE for i in starts)
