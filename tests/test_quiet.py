"""The two known notices a new user saw on every run are gone, and nothing else is hidden."""

from __future__ import annotations

import subprocess
import sys


def test_known_notices_are_silenced_and_others_are_not():
    code = (
        "import logging, warnings, surgerycli\n"
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
