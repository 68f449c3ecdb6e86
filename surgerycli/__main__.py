"""`python -m surgerycli ...`: the same CLI as `surgery` (for `accelerate launch -m` and `torchrun -m`)."""

from .cli import app

app()
