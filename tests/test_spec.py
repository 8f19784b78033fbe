import pytest

from onboard.harness.errors import BadInput
from onboard.harness.spec import ModelSpec, SourceKind


def test_default_is_the_embedded_smollm2():
    spec = ModelSpec.parse(None)
    assert (spec.kind, spec.target) == (SourceKind.EMBEDDED, "smollm2")


def test_kinds(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert ModelSpec.parse("gemma3-270m").kind is SourceKind.EMBEDDED
    assert ModelSpec.parse(str(tmp_path)).kind is SourceKind.LOCAL
    assert ModelSpec.parse(str(gguf)).kind is SourceKind.GGUF
    assert ModelSpec.parse("org/model", revision="abc").revision == "abc"
    tiny = ModelSpec.parse("tiny:qwen2")
    assert tiny.kind is SourceKind.TINY and tiny.random_weights and tiny.display == "tiny:qwen2"


@pytest.mark.parametrize("text", ["no-such-model", "missing.gguf", "tiny:", "a/b/c"])
def test_bad_input_is_exit_code_2(text):
    with pytest.raises(BadInput) as info:
        ModelSpec.parse(text)
    assert info.value.exit_code == 2


def test_folder_without_config_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="config.json"):
        ModelSpec.parse(str(tmp_path))
