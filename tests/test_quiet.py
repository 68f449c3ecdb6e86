"""The `surgery` command hides the known, harmless notices of the libraries underneath, and nothing else;
the library itself (`import surgerycli`, a defense, a Trainer with it) changes no global setting at all."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("lm_eval", "bitsandbytes", "gguf", "matplotlib", "scipy")


def test_the_command_silences_known_notices_and_no_others():
    code = (
        "import logging, warnings\n"
        "from surgerycli.commands.quiet import quiet_libraries\n"
        "quiet_libraries()\n"
        "logging.basicConfig()\n"
        "log = logging.getLogger('bitsandbytes.backends.cpu.ops')\n"
        "log.warning('Failed to load CPU gemm_4bit_forward from kernels-community: No module named kernels')\n"
        "log.warning('a real bitsandbytes problem')\n"
        "warnings.warn('Could not find a config file in /x - will assume that the vocabulary was not modified.')\n"
        "warnings.warn('a real peft warning')\n"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr
    assert "kernels-community" not in err and "Could not find a config file" not in err
    assert "a real bitsandbytes problem" in err and "a real peft warning" in err


# What a process's global settings are, as JSON: the warning filters, the levels and filters of the loggers a
# library might touch, transformers' verbosity and progress bars, matplotlib's backend, the heavy modules loaded.
STATE = """
def state():
    import logging, sys, warnings
    loggers = ["", "transformers", "bitsandbytes.backends.cpu.ops", "lm_eval", "peft", "accelerate"]
    out = {"filters": [repr(f) for f in warnings.filters],
           "loggers": {n: [logging.getLogger(n).level, [repr(f) for f in logging.getLogger(n).filters]] for n in loggers},
           "heavy": sorted(m for m in HEAVY if m in sys.modules)}
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf
        out["transformers"] = [hf.get_verbosity(), hf.is_progress_bar_enabled()]
    if "matplotlib" in sys.modules:
        import matplotlib
        out["backend"] = matplotlib.get_backend()
    return out
"""

PRELUDE = """
import json, sys
sys.path.insert(0, {tests!r})
HEAVY = {heavy!r}
{state}
"""

TRAIN = """
import torch
from tiny import tiny_model
from transformers import AutoTokenizer, Trainer, TrainingArguments
tok = AutoTokenizer.from_pretrained({tokenizer!r})
rows = [{{"input_ids": [5, 6, 7, 8, 9], "labels": [5, 6, 7, 8, 9]}}] * 4
def train(make, **kw):
    args = TrainingArguments(output_dir={out!r}, use_cpu=True, per_device_train_batch_size=2, max_steps=2,
                             report_to="none", save_strategy="no", logging_steps=1)
    make(model=tiny_model("llama", vocab_size=len(tok)), args=args, train_dataset=list(rows),
         processing_class=tok, **kw).train()
"""


def run(script: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_library_changes_nothing_global(tmp_path, tiny_llama_dir):
    """Importing surgerycli and building every defense load none of the heavy modules; training with each
    defense through `with_defense(Trainer)` leaves every global setting as a plain Trainer's run leaves it, and
    loads no module that the plain run does not."""
    from pathlib import Path

    prelude = PRELUDE.format(tests=str(Path(__file__).parent), heavy=HEAVY, state=STATE)
    train = TRAIN.format(tokenizer=str(tiny_llama_dir), out=str(tmp_path))
    plain = run(prelude + train + "train(Trainer)\nprint(json.dumps(state()))\n")
    with_defenses = run(prelude + """
import torch  # torch and numpy add filters of their own on import
before = state()
import surgerycli
defenses = [surgerycli.registry()[name]() for name in surgerycli.registry()]
built = state()
""" + train + """
from surgerycli import with_defense
for defense in defenses:
    if defense.stage != "post":  # a post-fine-tuning defense repairs after training (Defense.apply), untrained here
        train(with_defense(Trainer), defense=defense)
print(json.dumps({"before": before, "built": built, "after": state()}))
""")
    assert with_defenses["built"] == with_defenses["before"]  # importing and building change nothing
    assert with_defenses["built"]["heavy"] == []
    assert with_defenses["after"] == plain  # the same filters, levels, verbosity and modules as a plain Trainer
