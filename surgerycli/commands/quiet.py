"""The command line's quieting of the libraries underneath: `surgery` runs it first (cli.py), and `surgery search`
again in each local worker process it spawns. Never called by the library: importing `surgerycli` changes no
warning or logging setting of its host."""

from __future__ import annotations

import logging
import warnings


class _NotThisNotice(logging.Filter):
    """Drops one known, harmless notice by its text; every other record of the logger passes."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_libraries() -> None:
    """What a command's output need not show: known notices of the libraries underneath, each harmless here.

    bitsandbytes' CPU backend looks for an optional `kernels` package and says so on every import; it runs
    without it. peft warns when a GGUF base (the embedded SmolLM2) has no config.json beside it to compare
    vocabularies against; the vocabulary is never changed here. peft still reads transformers' renamed
    gradient-checkpointing aliases (a FutureWarning about names, not behaviour). transformers', lm-eval's and
    Optuna's info and warning lines would interleave with the progress bars (Optuna also marks the heartbeat's
    retry helpers experimental, though their behaviour is what the search relies on and tests).
    """
    import optuna
    from transformers.utils import logging as hf_logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NotThisNotice("from kernels-community"))
    warnings.filterwarnings("ignore", message=r"Could not find a config file in .* will assume that the vocabulary")
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6", category=FutureWarning)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial: `surgery search` prints its own
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # on the heartbeat, relied on
    hf_logging.set_verbosity_error()
