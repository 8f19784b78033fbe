"""onboard: is a model architecture ready to fine-tune, what is broken, and which fix makes it train.

    report = onboard.check("smollm2")                  # the checklist (onboard.api)
    onboard.lora_config(report, model)                 # LoRA as the checks built it
    with onboard.apply_patches(trainer, report): ...   # the verified fixes on your own trainer
    onboard.collator(report, tokenizer)                # packed, with boundaries, or right-padded: as verified
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:  # one source of the version: pyproject.toml, as installed
    __version__ = _version("onboard")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
_API = ("check", "apply_patches", "collator", "lora_config", "AppliedPatches", "SetupMismatch")


def __getattr__(name):  # the API loads torch and transformers: only when used, not on `import onboard`
    if name in _API:
        from onboard import api

        return getattr(api, name)
    raise AttributeError(f"module 'onboard' has no attribute {name!r}")


__all__ = ["__version__", *_API]
