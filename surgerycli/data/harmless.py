"""The built-in harmless reference set of `surgery inspect`: benign instructions this project writes.

Built from templates and topics so it covers explanation, how-to, writing and reasoning requests of the
kind chat models answer every day; nothing here comes from a downloaded data set.
"""

from __future__ import annotations

_TEMPLATES = (
    "Explain how {} works in simple terms.",
    "Give me three practical tips about {}.",
    "Write a short, friendly paragraph about {}.",
    "What are common beginner mistakes with {}, and how can I avoid them?",
    "Summarize the history of {} in a few sentences.",
    "Create a simple weekly plan for learning about {}.",
)

_TOPICS = (
    "baking sourdough bread",
    "photosynthesis",
    "a bicycle gear system",
    "saving money on groceries",
    "learning to play the guitar",
    "growing tomatoes on a balcony",
    "the water cycle",
    "writing a cover letter",
    "training for a first 5k run",
    "keeping a houseplant healthy",
    "public libraries",
    "the solar system",
    "making a budget spreadsheet",
    "composting kitchen scraps",
    "learning a second language",
    "planning a family picnic",
    "how rainbows form",
    "organizing a small bookshelf",
    "basic first aid for minor cuts",
    "brewing a good cup of tea",
    "volcanoes",
    "recycling plastic bottles",
    "writing clear emails",
    "chess openings for beginners",
)


def harmless_prompts() -> list[str]:
    """Every template filled with every topic (144 instructions)."""
    return [template.format(topic) for topic in _TOPICS for template in _TEMPLATES]
