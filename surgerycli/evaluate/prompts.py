"""`surgery eval --prompt-format`: how a question becomes the text a model answers.

  chat    the model's chat template, with the run's system prompt (the right question for a chat model)
  alpaca  the Alpaca template of the harmful-fine-tuning papers' evaluation (Lslland/Surgery and
          git-disl/Booster poison/evaluation/pred.py): no system prompt, and the tokenizer adds its BOS,
          as their `tokenizer(prompts)` call does
"""

from __future__ import annotations

from ..data.chat import render, with_system

ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\n{q}\n\n### Response:")
PROMPT_FORMATS = ("chat", "alpaca")


def prompt_text(tokenizer, question: str, system_prompt: str, fmt: str) -> str:
    if fmt == "alpaca":
        return ALPACA.format(q=question)
    return render(tokenizer, with_system([{"role": "user", "content": question}], system_prompt))


def adds_special_tokens(fmt: str) -> bool:
    """Whether the tokenizer adds its special tokens: the chat template already holds BOS, Alpaca text does not."""
    return fmt == "alpaca"
