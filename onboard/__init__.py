"""onboard: is a model architecture ready to fine-tune, what is broken, and which fix makes it train."""

__version__ = "0.1.0"
