"""`surgery finetune` with `[monitor] every_steps > 0`: a harmful-score probe while the attack trains.

Every `every_steps` optimizer steps the model answers `n` held-out harmful prompts greedily (up to
`max_new_tokens` tokens, through the chat template with the recipe's system prompt); the keyword judge
scores them, and `probe_harmful_score` goes to metrics.jsonl, the progress bar and training.png beside
the defense's metrics. Prompts that appear in the training mix or in a reference set are dropped first,
so the probe never asks what the model was trained or regularized on. Generation runs in eval mode under
inference mode and draws no random numbers, so the training trajectory is the same with and without it.
"""

from __future__ import annotations

import time

from transformers import TrainerCallback

from ..data.chat import Messages, render, with_system
from ..data.refsets import named_refset
from ..errors import InputError
from ..evaluate.generation import generate
from ..evaluate.judges import is_refusal
from .step import Metric
from .sections import MonitorSection

PROBE_METRIC = Metric("probe_harmful_score", "probe HS", ".1f", "probe harmful score % (keyword judge)", (-3, 103))


def probe_prompts(monitor: MonitorSection, held: list[list[Messages]]) -> tuple[list[str], int]:
    """(the first `n` probe prompts not in any of `held`'s user turns, how many were dropped as seen)."""
    seen = {m["content"] for group in held for chat in group for m in chat if m["role"] == "user"}
    prompts = [chat[0]["content"] for chat in named_refset(monitor.prompts, "harmful").samples
               if chat[0]["role"] == "user"]
    kept = [p for p in prompts if p not in seen]
    if not kept:
        raise InputError(f"monitor.prompts: every prompt of {monitor.prompts} is in the training mix or a "
                         f"reference set; the probe needs held-out prompts")
    return kept[:monitor.n], len(prompts) - len(kept)


class HarmProbe(TrainerCallback):
    """Probes at every `every`-th optimizer step and hands the score to the Trainer's metrics."""

    def __init__(self, trainer, tokenizer, prompts: list[str], every: int, max_new_tokens: int, system_prompt: str):
        self.trainer, self.tokenizer, self.every, self.max_new_tokens = trainer, tokenizer, every, max_new_tokens
        self.texts = [render(tokenizer, with_system([{"role": "user", "content": p}], system_prompt)) for p in prompts]
        self.seconds = 0.0  # time spent probing (summary.json's probe_time_s)

    def score(self, model) -> float:
        was_training = model.training
        model.eval()
        try:
            answers = generate(model, self.tokenizer, self.texts, batch_size=len(self.texts),
                               max_new_tokens=self.max_new_tokens)
        finally:
            model.train(was_training)
        return 100.0 * sum(not is_refusal(a) for a in answers) / len(answers)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            start = time.perf_counter()
            self.trainer.record(PROBE_METRIC.key, self.score(model))
            self.seconds += time.perf_counter() - start
            control.should_log = True  # logged at this very step
        return control
