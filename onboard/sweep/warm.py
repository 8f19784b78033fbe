"""Imported once by the sweep's fork server, before it forks any architecture's process: the imports
(torch, transformers, peft: ~7 s) and one tiny Llama run (CCE's torch_compile kernel: ~10 s) are paid
here once instead of in every child. A failure here only costs the children that time."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # no compile-worker pool to break on fork


def _warm() -> None:
    import warnings

    import torch

    torch.set_num_threads(1)  # no OpenMP pool in the server: each child starts its own
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from onboard.sweep.worker import check_architecture

    check_architecture("llama")


try:
    _warm()
except Exception:  # noqa: BLE001, S110 - a cold child still works, only slower
    pass
