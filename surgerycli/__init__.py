"""surgery: sink divergence and the Surgery defense against harmful fine-tuning of chat models."""

__version__ = "0.1.0"
