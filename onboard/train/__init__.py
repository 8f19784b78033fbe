"""`onboard train`: LoRA fine-tuning with the patches a check run verified (see run.py).

The names below load on first use: `onboard.train.options` (what the command line reads when it starts) must not
pull in torch and the Trainer through this package."""

_FROM_RUN = ("TrainResult", "load_check_report", "prepare_model", "refuse_existing_run", "train")


def __getattr__(name):
    if name == "TrainOptions":
        from onboard.train.options import TrainOptions

        return TrainOptions
    if name in _FROM_RUN:
        from onboard.train import run

        return getattr(run, name)
    raise AttributeError(f"module 'onboard.train' has no attribute {name!r}")


__all__ = ["TrainOptions", *_FROM_RUN]
