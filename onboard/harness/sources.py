"""The one seam between the engine and the models onboard ships: the embedded GGUF models, the released shapes
(`config:NAME`), the tiny builder (`tiny:ARCH`) and the fault catalog (`fault:NAME`).

`onboard.fixtures` holds those models and the catalog the tests use; the engine (harness, checks, patches,
train, reports, config, api) reaches it only through the functions here, each importing it when called. So
importing the engine never imports the fault catalog, and a test (tests/test_layers.py) holds every other
module to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # types only: nothing below imports the catalog at module level
    from onboard.fixtures.faults import Fault
    from onboard.fixtures.models import EmbeddedModel


def default_model() -> str:
    from onboard.fixtures.models import DEFAULT_MODEL

    return DEFAULT_MODEL


def embedded_models() -> dict[str, EmbeddedModel]:
    """The models shipped as GGUF files inside PyPI packages, by the name `onboard check` takes."""
    from onboard.fixtures.models import EMBEDDED

    return EMBEDDED


def shipped_configs() -> Path:
    """The folder of released model shapes (`config:NAME`)."""
    from onboard.fixtures.models import CONFIGS

    return CONFIGS


def config_path(name: str) -> Path:
    from onboard.fixtures.models import config_path as path_of

    return path_of(name)


def fault(name: str) -> Fault:
    """A fault-catalog model by name (BadInput with a close name when there is none)."""
    from onboard.fixtures.faults import get_fault

    return get_fault(name)


def faults() -> dict[str, Fault]:
    from onboard.fixtures.faults import FAULTS

    return FAULTS


def tiny_tokenizer():
    """The built-in tokenizer that tiny and config-shaped models use (ids below any tiny vocabulary)."""
    from onboard.fixtures.models import tiny_tokenizer as built

    return built()


def build_tiny(arch: str, vocab_size: int, make: Callable[[Any], Any], layers: int | None = None):
    """The architecture `arch` of the installed transformers, shrunk (to `layers` layers, default two, and one of
    every layer type); `make(config)` builds the model."""
    from onboard.fixtures.tiny import build_tiny as build

    return build(arch, vocab_size, make, layers=layers)


def known_architectures() -> set[str]:
    """The model types of the installed transformers: what tiny:ARCH takes."""
    from onboard.fixtures.tiny import known_architectures as known

    return known()


def check_architecture(model_type: str) -> None:
    """BadInput, naming the close model types, unless `model_type` is one tiny:ARCH can build (before building)."""
    from onboard.fixtures.tiny import check_architecture as check

    check(model_type)


def config_for(cls, config):
    from onboard.fixtures.tiny import config_for as adapt

    return adapt(cls, config)


def chatml_template() -> str:
    from onboard.fixtures.models import CHATML_TEMPLATE

    return CHATML_TEMPLATE


__all__ = ["build_tiny", "check_architecture", "chatml_template", "known_architectures", "config_for", "config_path", "default_model",
           "embedded_models", "fault", "faults", "shipped_configs", "tiny_tokenizer"]
