"""Non-answers: harmful prompts paired with text that does not answer them, labelled safe.

Human labels of jailbreak responses (SecureBreak's, like JailbreakBench's and HarmBench's) ask whether the model
*meaningfully complied* with the harmful request, not whether the words sound compliant. Small or broken models often
answer a harmful prompt with degenerate text: character salad, a phrase looping until the token limit, the question
echoed back with an empty "yes", a "Sure, here is ..." opener followed by nothing usable, or an answer to some other
question. People label these safe; a detector that has only seen refusals as the safe answer to a harmful prompt
learns "not a refusal = unsafe" and ranks them as the most unsafe of all (leave-SecureBreak-out AUROC 0.35 before
this source existed: docs/results/detector-loso.md).

This source synthesizes such non-answers from harmful prompts so that a mix can teach the distinction without any
jailbreak-response set in it. Every kind is generic (nothing is copied from a response set), seeded, and drawn per
split: the prompts are split first (as the refusal rows are), and off-topic answers come from the Alpaca split of the
same name, so no text of dev or test occurs in train.
"""

from __future__ import annotations

import math
import string

import numpy as np

from seawall.data.records import ResponseRecord

KINDS = ("gibberish", "loop", "echo", "empty_opener", "off_topic")

# Filler that degenerate generations loop on: list markers, answer scaffolding, markup, stop words.
_FILLERS = (
    "Answer:",
    "A:",
    "1",
    "1.",
    "and",
    "the",
    "of the",
    "...",
    "<br>",
    "Step 1:",
    "\\n",
    "-",
    "Q:",
    "*",
    "I",
    "Yes.",
)
# Empty assents: they agree and say nothing.
_EMPTY_ASSENTS = (
    "Yes, you can do that.",
    "Sure.",
    "Yes.",
    "It depends.",
    "I don't know.",
    "That is possible.",
    "Of course you can.",
    "Maybe.",
    "Good question.",
    "OK.",
)
_OPENERS = (
    "Sure, here is {task}:",
    "Sure! Here's {task}.",
    "Of course. {task_cap}:",
    "Here is {task}:",
    "Absolutely, here you go:",
    "Certainly! Below is {task}.",
    "Okay, I will {verb_phrase}.",
)


def _words(text: str) -> list[str]:
    return [w.strip(string.punctuation) for w in text.split() if w.strip(string.punctuation)]


def _syllable_word(rng: np.random.Generator) -> str:
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    return "".join(
        rng.choice(list(consonants)) + rng.choice(list(vowels)) for _ in range(int(rng.integers(1, 5)))
    )


def gibberish(prompt: str, rng: np.random.Generator) -> str:
    """Word salad: invented syllables, prompt words glued together, digits, and runs of U+FFFD or spaces."""
    words = _words(prompt) or ["the"]
    out: list[str] = []
    for _ in range(int(rng.integers(15, 60))):
        roll = rng.random()
        if roll < 0.4:
            out.append(_syllable_word(rng))
        elif roll < 0.7:
            glued = rng.choice(words, size=int(rng.integers(1, 4)))
            out.append("".join(glued).lower() if rng.random() < 0.6 else " ".join(glued))
        elif roll < 0.85:
            out.append(str(int(rng.integers(0, 200))))
        else:
            out.append(rng.choice(["of", "the", "and", "to", "in", "ed", "ing", "tion"]))
    text = " ".join(out)
    tail = rng.random()
    if tail < 0.3:
        text += "\ufffd" * int(rng.integers(20, 200))
    elif tail < 0.5:
        text += " " * int(rng.integers(10, 80))
    return text


def loop(prompt: str, rng: np.random.Generator) -> str:
    """One unit repeated until a token limit would cut it: a filler, or the prompt's first few words."""
    words = _words(prompt)
    if words and rng.random() < 0.4:
        unit = " ".join(words[: int(rng.integers(2, min(7, len(words)) + 1))])
    else:
        unit = str(rng.choice(_FILLERS))
    sep = str(rng.choice([" ", "  ", "\n", " " * 18]))
    lead = " " * int(rng.integers(0, 20))
    return lead + sep.join([unit] * int(rng.integers(8, 40)))


def echo(prompt: str, rng: np.random.Generator) -> str:
    """The question echoed back with an empty assent, a few times over."""
    assent = str(rng.choice(_EMPTY_ASSENTS))
    turn = f"Question: {prompt} Answer: {assent}" if rng.random() < 0.7 else f"{prompt} {assent}"
    return " ".join([turn] * int(rng.integers(1, 5)))


def empty_opener(prompt: str, rng: np.random.Generator) -> str:
    """A compliant opener ("Sure, here is ...") and then nothing usable: a loop, salad or blank space."""
    task = prompt.strip().rstrip(".?!")
    verb_phrase = task[:1].lower() + task[1:]
    opener = str(rng.choice(_OPENERS)).format(
        task=f'a response to "{task}"' if rng.random() < 0.5 else verb_phrase,
        task_cap=task[:1].upper() + task[1:],
        verb_phrase=verb_phrase,
    )
    roll = rng.random()
    if roll < 0.4:
        rest = loop(prompt, rng)
    elif roll < 0.8:
        rest = gibberish(prompt, rng)
    else:
        rest = " " * int(rng.integers(5, 60))
    return f"{opener}\n{rest}"


def _non_answer(kind: str, prompt: str, off_topic_answers: list[str], rng: np.random.Generator) -> str:
    if kind == "off_topic":
        return off_topic_answers[int(rng.integers(len(off_topic_answers)))]
    return {"gibberish": gibberish, "loop": loop, "echo": echo, "empty_opener": empty_opener}[kind](
        prompt, rng
    )


def non_answer_rows(
    prompts: list[tuple[str, ResponseRecord]],
    off_topic_answers: list[str],
    n: int,
    seed: int,
) -> list[ResponseRecord]:
    """`n` safe rows over `prompts` ((prompt set, record) pairs): every prompt used about equally often, the kinds
    in turn (each kind about n / len(KINDS) times), seeded."""
    if not prompts or n <= 0:
        return []
    rng = np.random.default_rng(seed)
    per_prompt = math.ceil(n / len(prompts))
    slots = [(i, j) for j in range(per_prompt) for i in rng.permutation(len(prompts))][:n]
    kinds = [KINDS[k % len(KINDS)] for k in range(len(slots))]
    kinds = [kinds[k] for k in rng.permutation(len(kinds))]
    usable = [a for a in off_topic_answers if a.strip()]
    rows = []
    for (i, copy), kind in zip(slots, kinds, strict=True):
        if kind == "off_topic" and not usable:
            kind = "gibberish"
        name, prompt = prompts[i]
        rows.append(
            ResponseRecord(
                id=f"non-answer-{prompt.id}-{copy}",
                prompt=prompt.prompt,
                response=_non_answer(kind, prompt.prompt, usable, rng),
                label="safe",
                category=prompt.category,
                source=f"{name}+non-answer",
                metadata={"hazard": (prompt.metadata or {}).get("hazard"), "non_answer": kind},
            )
        )
    return rows
