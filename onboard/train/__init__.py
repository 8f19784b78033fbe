"""`onboard train`: LoRA fine-tuning with the patches a check run verified (see run.py)."""

from onboard.train.run import TrainOptions, TrainResult, load_check_report, prepare_model, refuse_existing_run, train

__all__ = ["TrainOptions", "TrainResult", "load_check_report", "prepare_model", "refuse_existing_run", "train"]
