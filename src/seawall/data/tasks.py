"""Downstream tasks posed as instructions, and parsing of a model's free-text answer back to a label."""

from __future__ import annotations

import re
from dataclasses import dataclass

from seawall.data.records import TaskExample


@dataclass(frozen=True)
class Task:
    """A closed-label task: how to ask, which words answer, and how to read an answer."""

    name: str
    instruction: str
    labels: tuple[str, ...]
    aliases: dict[str, str]
    passage_words: int = 120

    def prompt(self, example: TaskExample) -> str:
        """The user message for `example` (long BoolQ passages are cut so prompts fit small context budgets)."""
        text = example.input
        words = text.split()
        if len(words) > self.passage_words + 40:
            text = " ".join(words[: self.passage_words]) + " … " + " ".join(words[-40:])
        return f"{self.instruction}\n\n{text}\n\nAnswer with one of: {', '.join(self.labels)}."

    def answer(self, example: TaskExample) -> str:
        """The gold label word for `example` (loaders may store the label as a word or as its id)."""
        return self.canonical(example.target, example.choices)

    def canonical(self, target: str, choices: tuple[str, ...] = ()) -> str:
        key = str(target).strip().lower()
        if key in self.labels:
            return key
        if key in self.aliases:
            return self.aliases[key]
        if key.isdigit() and choices and int(key) < len(choices):
            return self.canonical(choices[int(key)])
        raise ValueError(f"task {self.name}: cannot map target {target!r} to one of {self.labels}")

    def parse(self, response: str) -> str | None:
        """The label the response gives: the earliest label word or alias, or None when there is none."""
        text = response.lower()
        best: tuple[int, str] | None = None
        for word, label in [(label, label) for label in self.labels] + list(self.aliases.items()):
            if word.isdigit():
                continue
            match = re.search(rf"(?<![\w/]){re.escape(word)}(?![\w/])", text)
            if match and (best is None or match.start() < best[0]):
                best = (match.start(), label)
        return best[1] if best else None


TASKS: dict[str, Task] = {
    "sst2": Task(
        "sst2",
        "What is the sentiment of this movie review sentence?",
        ("negative", "positive"),
        {"0": "negative", "1": "positive", "neg": "negative", "pos": "positive"},
    ),
    "ag_news": Task(
        "ag_news",
        "Which topic is this news article about?",
        ("world", "sports", "business", "sci/tech"),
        {
            "1": "world",
            "2": "sports",
            "3": "business",
            "4": "sci/tech",
            "science": "sci/tech",
            "technology": "sci/tech",
            "sci_tech": "sci/tech",
            "sport": "sports",
        },
    ),
    "boolq": Task(
        "boolq",
        "Read the passage and answer the question.",
        ("yes", "no"),
        {"true": "yes", "false": "no"},
        passage_words=110,
    ),
}
