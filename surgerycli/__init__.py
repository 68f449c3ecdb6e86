"""surgery: sink divergence and the Surgery defense against harmful fine-tuning of chat models."""

import logging
import warnings

__version__ = "0.1.0"


class _NotThisNotice(logging.Filter):
    """Drops one known, harmless notice by its text; every other record of the logger passes."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


# bitsandbytes' CPU backend looks for an optional `kernels` package and says so on every import; it runs
# without it. peft warns when a GGUF base (the embedded SmolLM2) has no config.json beside it to compare
# vocabularies against; the vocabulary is never changed here.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NotThisNotice("from kernels-community"))
warnings.filterwarnings("ignore", message=r"Could not find a config file in .* will assume that the vocabulary")
