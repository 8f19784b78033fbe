"""Sweep tasks for tests/test_sweep_cmd.py: architectures that hang or crash on purpose, run in the sweep's
child processes exactly as the real task is. Every other name runs the real check."""

import os
import signal
import time

from onboard.sweep.worker import check_architecture


def faulty(arch: str) -> dict:
    if arch == "hang":
        while True:
            time.sleep(1)
    if arch == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    return check_architecture(arch)
