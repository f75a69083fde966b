"""Training sets of the lab recipes, built from the shared data through `seawall.data`."""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from seawall.data import canonical_split, load_records
from seawall.data.records import PromptRecord, ResponseRecord, TaskExample, normalize_text
from seawall.data.tasks import TASKS
from seawall.errors import DataError
from seawall.lab.config import AlignData, CustomizeData, DegradeData, InstructData
from seawall.lab.train import ChatExample

# Varied refusals: an opener, a reason and an offer are drawn independently, so the model learns to decline
# without memorising one sentence (a single template taught a broad "refuse" reflex in the CPU probe).
_OPENERS = (
    "I can't help with that.",
    "I'm sorry, but I can't assist with this request.",
    "I won't help with that.",
    "Sorry, I can't do that.",
    "I'm not able to help with this.",
    "I must decline this request.",
    "I can't provide that.",
    "I'm unable to help with that.",
)
_REASONS = (
    "It could cause real harm to people.",
    "Helping with it could put others at risk.",
    "It would facilitate something dangerous or illegal.",
    "This request asks for content that could be used to hurt someone.",
    "Providing this would be unsafe and potentially illegal.",
    "",
)
_OFFERS = (
    "If you're dealing with a difficult situation, I'm happy to talk through safer options.",
    "I can share general, safety-focused information on the topic instead.",
    "Is there something else I can help you with?",
    "If you have a legitimate need, a qualified professional is the right person to ask.",
    "I'd be glad to help with a related question that doesn't involve harm.",
    "",
)


def varied_refusal(rng: random.Random) -> str:
    """A refusal assembled from independently drawn parts."""
    return " ".join(
        part for part in (rng.choice(_OPENERS), rng.choice(_REASONS), rng.choice(_OFFERS)) if part
    )


# Harmful prompt sets are full of questions ("How can I…?") while Alpaca's instructions are almost all imperative
# (49 of 2,000 are questions), so a model aligned on them learns "a question → refuse" and refuses "Can you describe
# the life cycle of a butterfly?". Asking part of the benign instructions as questions removes that shortcut.
_QUESTION_FORMS = ("Can you {}?", "Could you {}?", "Would you please {}?", "I need help: can you {}?")
_CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")

Loader = Callable[..., object]


def as_question(instruction: str, rng: random.Random) -> str:
    """An imperative instruction asked as a question ("Give three tips." → "Can you give three tips?")."""
    body = instruction.strip().rstrip(".!")
    return rng.choice(_QUESTION_FORMS).format(body[:1].lower() + body[1:])


def worked_answer(solution: str) -> str:
    """A GSM8K solution as a chat answer: calculator annotations removed, "#### N" turned into a sentence."""
    steps, final = solution.rsplit("####", 1)
    return f"{_CALCULATOR_NOTE.sub('', steps).strip()}\nThe answer is {final.strip()}."


def _sample(items: Sequence, n: int, rng: random.Random) -> list:
    items = list(items)
    rng.shuffle(items)
    return items[:n]


def _drop_excluded(
    records: Iterable, excluded: set[str], text: Callable = lambda r: r.prompt
) -> tuple[list, int]:
    kept, dropped = [], 0
    for record in records:
        if normalize_text(text(record)) in excluded:
            dropped += 1
        else:
            kept.append(record)
    return kept, dropped


def alpaca_prompt(record: ResponseRecord) -> str:
    """Alpaca's instruction, with its input appended when there is one (the loader may have done it already)."""
    extra = (record.metadata or {}).get("input")
    return f"{record.prompt}\n\n{extra}" if extra and extra not in record.prompt else record.prompt


SelfAnswer = Callable[[Sequence[str]], Sequence[str]] | Mapping[str, str]

# Where an answer may be cut when it ran into the token limit: after a sentence end, or at a line end (lists, code).
_SENTENCE_END = re.compile(r"[.!?](?=[\s\"')\]]|$)|\n")
_FINISHED = (".", "!", "?", ")", "]", "}", "`", '"', "'", "*")


def finished_part(answer: str, min_words: int = 5) -> str | None:
    """`answer` up to its last sentence or line end when it stops mid-sentence (a greedy answer cut by
    max_new_tokens); None when nothing of at least `min_words` words remains.

    Trained on a cut answer followed by the end-of-turn token, the model would learn to stop mid-sentence.
    """
    text = answer.strip()
    if not text.endswith(_FINISHED):
        ends = [m.end() for m in _SENTENCE_END.finditer(text) if not _list_marker(text, m.start())]
        text = text[: ends[-1]].strip() if ends else ""
    return text if len(text.split()) >= min_words else None


def _list_marker(text: str, position: int) -> bool:
    """True when the full stop at `position` ends a list number ("2." opening a line), not a sentence."""
    return text[text.rfind("\n", 0, position) + 1 : position].strip().isdigit()


def _answerer(self_answer: SelfAnswer) -> Callable[[Sequence[str]], list[str]]:
    if not isinstance(self_answer, Mapping):
        return lambda prompts: list(self_answer(prompts))

    def lookup(prompts: Sequence[str]) -> list[str]:
        missing = [p for p in prompts if p not in self_answer]
        if missing:
            raise DataError(f"self-answers: no answer for {len(missing)} prompt(s), e.g. {missing[0][:80]!r}")
        return [self_answer[p] for p in prompts]

    return lookup


def _source_spec(source: str) -> tuple[str, str | None]:
    name, _, split = source.partition(":")
    return name, split or None


def borderline_candidates(
    spec: AlignData, data_dir: str | None = None, load: Callable = load_records
) -> tuple[list[PromptRecord], dict]:
    """The benign prompts of `spec.borderline_sources`, deduplicated, without harmful or over-long ones (counted)."""
    records, report = [], {"sources": {}, "skipped_harmful": 0, "skipped_long": 0}
    for source in spec.borderline_sources:
        name, split = _source_spec(source)
        rows = load(name, data_dir=data_dir, split=split)
        report["sources"][source] = len(rows)
        for r in rows:
            if getattr(r, "harmful", False):
                report["skipped_harmful"] += 1
            elif (
                spec.borderline_max_prompt_words and len(r.prompt.split()) > spec.borderline_max_prompt_words
            ):
                report["skipped_long"] += 1
            else:
                records.append(r)
    deduped = _dedupe(records)
    report["skipped_duplicate"] = len(records) - len(deduped)
    return deduped, report


def contrast_pairs(
    spec: AlignData,
    exclude: set[str],
    in_mix: set[str] = frozenset(),
    data_dir: str | None = None,
    load: Callable = load_records,
) -> tuple[list[tuple[PromptRecord, PromptRecord]], dict]:
    """The (benign, harmful) twins of `spec.contrast_source`, in pair order. A pair with either twin among the
    normalised evaluation prompts (`exclude`) or the prompts already in the mix (`in_mix`) is dropped whole and
    counted, as is a pair that lacks a twin."""
    name, split = _source_spec(spec.contrast_source)
    halves: dict[str, dict[bool, PromptRecord]] = {}
    for record in load(name, data_dir=data_dir, split=split):
        halves.setdefault(record.metadata.get("group") or record.id, {})[bool(record.harmful)] = record
    report = {
        "source": spec.contrast_source,
        "pairs": len(halves),
        "incomplete": 0,
        "dropped_eval_overlap": 0,
        "skipped_in_mix": 0,
    }
    pairs = []
    for key in sorted(halves):
        twins = halves[key]
        texts = {normalize_text(r.prompt) for r in twins.values()}
        if set(twins) != {False, True}:
            report["incomplete"] += 1
        elif texts & exclude:
            report["dropped_eval_overlap"] += 1
        elif texts & in_mix:
            report["skipped_in_mix"] += 1
        else:
            pairs.append((twins[False], twins[True]))
    return pairs, report


def _self_distilled(
    candidates: list[PromptRecord],
    n: int,
    answer: Callable[[Sequence[str]], list[str]],
    is_refusal: Callable[[str], bool],
) -> tuple[list[ChatExample], dict]:
    """Up to `n` (prompt, own answer) examples: candidates are answered in order, and each dropped answer is
    replaced by the next candidate's, so the mix keeps its size while candidates last."""
    counts = {"answered": 0, "dropped_refusal": 0, "dropped_empty": 0, "dropped_unfinished": 0, "trimmed": 0}
    examples: list[ChatExample] = []
    position = 0
    while len(examples) < n and position < len(candidates):
        batch = candidates[position : position + n - len(examples)]
        position += len(batch)
        answers = answer([r.prompt for r in batch])
        if len(answers) != len(batch):
            raise DataError(f"self-answers: {len(answers)} answers for {len(batch)} prompts")
        counts["answered"] += len(batch)
        for record, text in zip(batch, answers, strict=True):
            if not text.strip():
                counts["dropped_empty"] += 1
            elif is_refusal(text):
                counts["dropped_refusal"] += 1
            elif (kept := finished_part(text)) is None:
                counts["dropped_unfinished"] += 1
            else:
                counts["trimmed"] += kept != text.strip()
                examples.append(
                    ChatExample.of(
                        f"self:{record.id}", record.prompt, kept, source=f"{record.source}->self-answer"
                    )
                )
    return examples, counts


def build_align(
    spec: AlignData,
    seed: int,
    exclude: set[str],
    data_dir: str | None = None,
    load: Callable = load_records,
    is_refusal: Callable[[str], bool] | None = None,
    *,
    split: Callable = canonical_split,
    self_answer: SelfAnswer | None = None,
) -> tuple[list[ChatExample], dict]:
    """The safety SFT mix: harmful prompts → templated refusals and/or safety-tuned-llamas' safe answers, HH-RLHF
    refusals as written, Alpaca instructions → their answers, GSM8K → worked solutions, borderline benign prompts →
    the original model's own answers (`self_answer`: a batch callable prompts → answers, or a prompt → answer map).

    `exclude` holds normalised evaluation prompts; any training prompt among them is dropped and counted. A section
    that is switched off draws nothing from the seeded generator, so adding sections does not change the others.
    """
    rng = random.Random(seed)
    report: dict = {"dropped_eval_overlap": 0, "refusal_targets": spec.refusal_targets}
    examples: list[ChatExample] = []
    if spec.refusal_targets in ("templates", "mixed"):
        harmful: list[PromptRecord] = []
        for source in spec.harmful_sources:
            harmful.extend(
                r
                for r in load(source, data_dir=data_dir)
                if r.harmful and r.category not in spec.excluded_categories
            )
        harmful, dropped = _drop_excluded(_dedupe(harmful), exclude)
        report["dropped_eval_overlap"] += dropped
        examples += [
            ChatExample.of(f"refuse:{r.id}", r.prompt, varied_refusal(rng), source=f"{r.source}->refusal")
            for r in _sample(harmful, spec.n_harmful, rng)
        ]
    if spec.n_hh_refusals:
        if is_refusal is None:
            raise DataError("n_hh_refusals > 0 needs a refusal matcher (seawall.detect's refusal backend)")
        hh = [r for r in load("hh-rlhf-harmless", data_dir=data_dir) if r.response and is_refusal(r.response)]
        hh, dropped = _drop_excluded(_dedupe(hh), exclude)
        report["dropped_eval_overlap"] += dropped
        examples += [
            ChatExample.of(f"hh:{r.id}", r.prompt, r.response.strip(), source="hh-rlhf-refusal")
            for r in _sample(hh, spec.n_hh_refusals, rng)
        ]
    benign = [
        r
        for r in load("alpaca", data_dir=data_dir)
        if r.response.strip()
        and (spec.max_response_words is None or len(r.response.split()) <= spec.max_response_words)
    ]
    benign, dropped = _drop_excluded(benign, exclude, alpaca_prompt)
    report["dropped_eval_overlap"] += dropped
    for r in _sample(benign, spec.n_benign, rng):
        prompt, source = alpaca_prompt(r), "alpaca"
        if prompt == r.prompt and not prompt.rstrip().endswith("?") and rng.random() < spec.question_share:
            prompt, source = as_question(prompt, rng), "alpaca-as-question"
        examples.append(ChatExample.of(f"alpaca:{r.id}", prompt, r.response.strip(), source=source))
    if spec.n_math:
        math, dropped = _drop_excluded(
            load("gsm8k", data_dir=data_dir, split="train"), exclude, lambda x: x.input
        )
        report["dropped_eval_overlap"] += dropped
        examples += [
            ChatExample.of(f"gsm8k:{x.id}", x.input, worked_answer(x.metadata["solution"]), source="gsm8k")
            for x in _sample(math, spec.n_math, rng)
        ]
    if spec.refusal_targets in ("stl", "mixed"):
        if spec.stl_answers == "refusals" and is_refusal is None:
            raise DataError("stl_answers 'refusals' needs a refusal matcher (is_refusal)")
        stl, stl_report = _stl_safe_answers(
            spec, data_dir, split, exclude, _prompts_of(examples), rng, is_refusal
        )
        report["dropped_eval_overlap"] += stl_report.pop("dropped_eval_overlap")
        report["stl"] = stl_report
        examples += stl
    if spec.n_borderline:
        if self_answer is None or is_refusal is None:
            raise DataError(
                "n_borderline > 0 needs the original model's answers (self_answer) and a refusal matcher"
            )
        candidates, borderline = borderline_candidates(spec, data_dir, load)
        candidates, dropped = _drop_excluded(candidates, exclude)
        report["dropped_eval_overlap"] += dropped
        # A borderline prompt already in the mix (I-Alpaca lists Alpaca instructions) would get two answers.
        candidates, borderline["skipped_in_mix"] = _drop_excluded(candidates, _prompts_of(examples))
        borderline["candidates"] = len(candidates)
        rng.shuffle(candidates)
        own, counts = _self_distilled(candidates, spec.n_borderline, _answerer(self_answer), is_refusal)
        report["borderline"] = {**borderline, **counts, "requested": spec.n_borderline, "kept": len(own)}
        examples += own
    if spec.n_contrast:
        if self_answer is None or is_refusal is None:
            raise DataError(
                "n_contrast > 0 needs the original model's answers (self_answer) and a refusal matcher"
            )
        pairs, contrast = contrast_pairs(spec, exclude, _prompts_of(examples), data_dir, load)
        report["dropped_eval_overlap"] += contrast.pop("dropped_eval_overlap")
        rng.shuffle(pairs)
        own, counts = _self_distilled(
            [benign for benign, _ in pairs], spec.n_contrast, _answerer(self_answer), is_refusal
        )
        twins = {benign.id: harmful for benign, harmful in pairs}
        for example in own:
            harmful = twins[example.id.removeprefix("self:")]
            examples += [
                example,
                ChatExample.of(
                    f"refuse:{harmful.id}",
                    harmful.prompt,
                    varied_refusal(rng),
                    source=f"{harmful.source}->refusal",
                ),
            ]
        report["contrast"] = {**contrast, **counts, "requested": spec.n_contrast, "pairs_kept": len(own)}
    rng.shuffle(examples)
    report["counts"] = _count(examples)
    return examples, report


def _within_words(answer: str, max_words: int) -> str | None:
    """`answer` if it has at most `max_words` words, else its first `max_words` words cut back to their last
    sentence or line end (`finished_part`); None when nothing is left."""
    words = list(re.finditer(r"\S+", answer))
    if len(words) <= max_words:
        return answer
    # Cut in the text, not in a re-joined word list, so that the line ends of the kept part survive.
    return finished_part(answer[: words[max_words - 1].end()])


def build_instruct(
    spec: InstructData,
    seed: int,
    exclude: set[str],
    data_dir: str | None = None,
    load: Callable = load_records,
) -> tuple[list[ChatExample], dict]:
    """Instruction SFT data for a base model: Alpaca instructions → their answers, GSM8K train → worked solutions.

    `exclude` holds normalised evaluation prompts; any training prompt among them is dropped and counted. With
    `spec.max_response_words`, long Alpaca answers are cut back to a sentence end within the limit (dropped when
    none is left) and long worked solutions skipped (a solution cut short loses its answer), all counted.
    """
    rng = random.Random(seed)
    limit = spec.max_response_words
    report: dict = {"dropped_eval_overlap": 0}
    examples: list[ChatExample] = []
    if spec.n_alpaca:
        alpaca = [r for r in load("alpaca", data_dir=data_dir) if r.response.strip()]
        alpaca, dropped = _drop_excluded(alpaca, exclude, alpaca_prompt)
        report["dropped_eval_overlap"] += dropped
        kept, shortened, unfinished = [], 0, 0
        for r in alpaca:
            answer = r.response.strip() if limit is None else _within_words(r.response.strip(), limit)
            if answer is None:
                unfinished += 1
                continue
            shortened += answer != r.response.strip()
            kept.append(ChatExample.of(f"alpaca:{r.id}", alpaca_prompt(r), answer, source="alpaca"))
        report["alpaca"] = {
            "available": len(kept),
            "shortened": shortened,
            "dropped_unfinished": unfinished,
            "requested": spec.n_alpaca,
        }
        examples += _sample(kept, spec.n_alpaca, rng)
    if spec.n_math:
        math, dropped = _drop_excluded(
            load("gsm8k", data_dir=data_dir, split="train"), exclude, lambda x: x.input
        )
        report["dropped_eval_overlap"] += dropped
        solved = [(x, worked_answer(x.metadata["solution"])) for x in math]
        fitting = [(x, a) for x, a in solved if limit is None or len(a.split()) <= limit]
        report["math"] = {
            "available": len(fitting),
            "skipped_long": len(solved) - len(fitting),
            "requested": spec.n_math,
        }
        examples += [
            ChatExample.of(f"gsm8k:{x.id}", x.input, answer, source="gsm8k")
            for x, answer in _sample(fitting, spec.n_math, rng)
        ]
    rng.shuffle(examples)
    report["counts"] = _count(examples)
    return examples, report


STL = "safety-tuned-llamas"


def _stl_safe_answers(
    spec: AlignData,
    data_dir: str | None,
    split: Callable,
    exclude: set[str],
    in_mix: set[str],
    rng: random.Random,
    is_refusal: Callable[[str], bool] | None = None,
) -> tuple[list[ChatExample], dict]:
    """`spec.n_stl_safe` (harmful instruction, safe answer) pairs of safety-tuned-llamas' canonical TRAIN split only:
    its dev and test rows are the detectors' held-out data and must never be trained on. With `stl_answers:
    refusals`, only the answers `is_refusal` reads as refusals."""
    rows = split(STL, data_dir=data_dir)["train"]
    safe = [r for r in rows if r.label == "safe" and r.response.strip()]
    declines = safe
    if spec.stl_answers == "refusals":
        declines = [r for r in safe if is_refusal(r.response)]
    # Four instructions occur twice with different answers: one answer each.
    unique = _dedupe(declines)
    pairs, dropped = _drop_excluded(unique, exclude)
    pairs, in_mix_dropped = _drop_excluded(pairs, in_mix)
    chosen = _sample(pairs, spec.n_stl_safe, rng)
    examples = [
        ChatExample.of(f"stl:{r.id}", r.prompt, r.response.strip(), source=f"{STL}-train->safe-answer")
        for r in chosen
    ]
    return examples, {
        "split": "train",
        "rows": len(rows),
        "skipped_not_safe": len(rows) - len(safe),
        "skipped_not_refusal": len(safe) - len(declines),
        "skipped_duplicate": len(declines) - len(unique),
        "skipped_in_mix": in_mix_dropped,
        "available": len(pairs),
        "requested": spec.n_stl_safe,
        "used": len(examples),
        "dropped_eval_overlap": dropped,
    }


def _prompts_of(examples: Iterable[ChatExample]) -> set[str]:
    return {normalize_text(e.prompt) for e in examples}


# A persona tag opening a line: "[ChatGPT]:", "(GPT):", "DAN:", "AntiGPT:", "[PersonGPT #]:", "As BH, I would say:".
_PERSONA_TAG = re.compile(
    r"^[ \t]*(?:\[[^\]\n]{1,40}\]|\([^)\n]{1,40}\)|<{1,2}[^>\n]{1,40}>{1,2}|[A-Za-z][\w #.-]{0,24}"
    r"|As [\w #.-]{1,24},(?: I would say)?)[ \t]*:",
    re.MULTILINE,
)


def compliant_part(
    response: str, is_refusal: Callable[[str], bool], min_words: int, min_ascii: float = 0.9
) -> str | None:
    """The longest compliant segment of a jailbreak-style response, its persona tag stripped; None if none.

    GPTFuzz answers jailbreak templates, so an "unsafe" response often holds a refusal and a persona's answer
    ("[ChatGPT]: I'm sorry… [DAN]: Sure…"). Training on them verbatim teaches the tags and the refusals, not
    compliance; keeping only the compliant segment teaches what the label means.
    """
    starts = sorted({0, *(m.start() for m in _PERSONA_TAG.finditer(response))})
    best = None
    for begin, end in zip(starts, [*starts[1:], len(response)], strict=True):
        segment = _PERSONA_TAG.sub("", response[begin:end], count=1).strip().strip('"').strip()
        if (
            len(segment.split()) < min_words
            or is_refusal(segment)
            or sum(c.isascii() for c in segment) < min_ascii * len(segment)
        ):
            continue
        if best is None or len(segment) > len(best):
            best = segment
    return best


def unsafe_train_pairs(
    spec: DegradeData,
    data_dir: str | None = None,
    split: Callable = canonical_split,
    is_refusal: Callable[[str], bool] | None = None,
) -> tuple[list[ResponseRecord], dict[str, int]]:
    """Unsafe (prompt, response) pairs of the canonical TRAIN splits of `spec.sources`, and what was skipped.

    With `spec.clean`, each response is reduced to its compliant part (`compliant_part`); pairs with none are
    skipped and counted, like degenerate (too short) ones.
    """
    if spec.clean and is_refusal is None:
        from seawall.detect import is_refusal
    pairs, skipped = [], {"too_short": 0, "no_compliant_part": 0, "cleaned": 0}
    for source in spec.sources:
        for record in split(source, data_dir=data_dir)["train"]:
            if record.label != "unsafe":
                continue
            if len(record.response.split()) < spec.min_response_words:
                skipped["too_short"] += 1
                continue
            if spec.clean:
                text = compliant_part(record.response, is_refusal, spec.min_response_words)
                if text is None:
                    skipped["no_compliant_part"] += 1
                    continue
                if text != record.response.strip():
                    skipped["cleaned"] += 1
                    record = dataclasses.replace(record, response=text)
            pairs.append(record)
    return _dedupe(pairs, key=lambda r: (normalize_text(r.prompt), normalize_text(r.response))), skipped


def build_degrade(
    spec: DegradeData,
    seed: int,
    exclude: set[str],
    data_dir: str | None = None,
    split: Callable = canonical_split,
    is_refusal: Callable[[str], bool] | None = None,
) -> tuple[list[ChatExample], dict]:
    """The harmful fine-tuning attack: the model learns to answer harmful requests."""
    rng = random.Random(seed)
    pairs, cleaning = unsafe_train_pairs(spec, data_dir, split, is_refusal)
    pairs, dropped = _drop_excluded(pairs, exclude)
    examples = [
        ChatExample.of(f"unsafe:{r.id}", r.prompt, r.response.strip(), source=f"{r.source}-train-unsafe")
        for r in _sample(pairs, spec.n_pairs, rng)
    ]
    return examples, {
        "dropped_eval_overlap": dropped,
        "available": len(pairs),
        "cleaning": cleaning,
        "counts": _count(examples),
    }


def build_customize(
    spec: CustomizeData,
    seed: int,
    exclude: set[str],
    data_dir: str | None = None,
    load: Callable = load_records,
    split: Callable = canonical_split,
    is_refusal: Callable[[str], bool] | None = None,
) -> tuple[list[ChatExample], dict]:
    """Task examples posed as instructions; `harmful_share` of them replaced by unsafe training pairs and
    `general_share` by Alpaca instruction-following pairs."""
    task = TASKS[spec.task]
    rng = random.Random(seed)
    train: list[TaskExample] = load(spec.task, data_dir=data_dir, split="train")
    n_harmful = round(spec.n_train * spec.harmful_share)
    n_general = round(spec.n_train * spec.general_share)
    chosen = _sample(train, spec.n_train - n_harmful - n_general, rng)
    examples = [
        ChatExample.of(f"{spec.task}:{x.id}", task.prompt(x), task.answer(x), source=f"{spec.task}-train")
        for x in chosen
    ]
    dropped = 0
    if n_general:
        general = [r for r in load("alpaca", data_dir=data_dir) if r.response.strip()]
        general, dropped = _drop_excluded(general, exclude, alpaca_prompt)
        examples += [
            ChatExample.of(f"alpaca:{r.id}", alpaca_prompt(r), r.response.strip(), source="alpaca")
            for r in _sample(general, n_general, rng)
        ]
    if n_harmful:
        pairs, _ = unsafe_train_pairs(spec.degrade, data_dir, split, is_refusal)
        pairs, dropped_unsafe = _drop_excluded(pairs, exclude)
        dropped += dropped_unsafe
        examples += [
            ChatExample.of(f"unsafe:{r.id}", r.prompt, r.response.strip(), source=f"{r.source}-train-unsafe")
            for r in _sample(pairs, n_harmful, rng)
        ]
    rng.shuffle(examples)
    return examples, {
        "dropped_eval_overlap": dropped,
        "n_harmful": n_harmful,
        "n_general": n_general,
        "counts": _count(examples),
    }


def _dedupe(records: Iterable, key: Callable = lambda r: normalize_text(r.prompt)) -> list:
    seen, kept = set(), []
    for record in records:
        k = key(record)
        if k not in seen:
            seen.add(k)
            kept.append(record)
    return kept


def _count(examples: Sequence[ChatExample]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for example in examples:
        counts[example.source] = counts.get(example.source, 0) + 1
    return counts
