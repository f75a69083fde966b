"""The lab recipes: instruct (a base model made a chat model), align (safety SFT), degrade (harmful fine-tuning),
customize (task fine-tuning)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from seawall.data import canonical_split, load_records
from seawall.data.hygiene import check_no_overlap, normalized_set
from seawall.data.suites import evaluation_prompts
from seawall.errors import ModelError
from seawall.lab import data as lab_data
from seawall.lab.config import AlignRecipe, CustomizeRecipe, DegradeRecipe, InstructRecipe
from seawall.lab.train import ChatExample, train

if TYPE_CHECKING:
    from seawall.generation.cache import GenerationCache


def resolve_model_dir(ref: str | Path) -> Path:
    """A local model folder for `ref`: an existing folder as is, otherwise `seawall.models.resolve_model(ref)`."""
    path = Path(ref)
    if path.is_dir():
        return path
    try:
        from seawall.models import resolve_model
    except ImportError as error:
        raise ModelError(
            f"model {ref!r} is not a folder and seawall.models is not available to resolve it"
        ) from error
    resolved = resolve_model(str(ref))
    return Path(getattr(resolved, "path", resolved))


def _guarded_train(
    recipe: Any,
    examples: list[ChatExample],
    report: dict,
    output: str | Path,
    evaluation: dict[str, list[str]],
    kind: str,
    chat_template: str | None = None,
) -> dict:
    check_no_overlap({f"{kind}-train": [e.prompt for e in examples]}, evaluation)
    model_dir = resolve_model_dir(recipe.model)
    record = {"recipe": kind, "config": recipe.model_dump(mode="json"), "data_report": report}
    return train(model_dir, examples, recipe.train, output, record=record, chat_template=chat_template)


def _refusal_matcher() -> Callable[[str], bool]:
    from seawall.detect import is_refusal

    return is_refusal


SELF_ANSWER_CHUNK = 32


def self_answerer(
    model_dir: str | Path,
    max_new_tokens: int,
    dtype: str = "auto",
    threads: int = 2,
    cache: GenerationCache | None = None,
    batch_size: int = 8,
) -> Callable[[Sequence[str]], list[str]]:
    """prompts → greedy single-turn answers of the model in `model_dir` (the original, before alignment).

    Answers go through the generation cache (keyed by the model's fingerprint at `dtype`, the
    conversation and the decoding settings), so a rerun or a resumed run generates only what is missing; the model
    is loaded on the first cache miss only.
    """
    from seawall.generation.cache import GenerationCache, model_fingerprint

    if cache is None:  # not `cache or …`: an empty cache is falsy (it has a length)
        cache = GenerationCache()
    fingerprint = model_fingerprint(model_dir, dtype)
    # The evaluation harness's key shape, so that an evaluation of the original at the same length shares entries.
    decoding = {"max_new_tokens": max_new_tokens, "temperature": 0.0}
    loaded: dict[str, Any] = {}

    def generate(conversations: list[list[dict[str, str]]]) -> list[str]:
        if "generator" not in loaded:
            from seawall.generation import GenerationConfig, load_generator

            loaded["generator"] = load_generator(
                "transformers",
                model=str(model_dir),
                config=GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0),
                batch_size=batch_size,
                dtype=dtype,
                threads=threads,
            )
        return loaded["generator"].generate(conversations)

    def answer(prompts: Sequence[str]) -> list[str]:
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        answers: list[str] = []
        with tqdm(total=len(conversations), desc="self-answers", unit="prompt") as bar:
            for start in range(0, len(conversations), SELF_ANSWER_CHUNK):
                chunk = conversations[start : start + SELF_ANSWER_CHUNK]
                answers += cache.generate(generate, chunk, fingerprint, decoding)
                bar.update(len(chunk))
        return answers

    return answer


def instruct(
    recipe: InstructRecipe,
    output: str | Path,
    load: Callable = load_records,
    tasks: tuple[str, ...] = (),
) -> dict:
    """Instruction-tune the base model `recipe.model` into a chat model in OUTPUT/model; returns the run record.

    A tokenizer without a chat template is given `recipe.chat_template`'s (`seawall.lab.templates`); the saved
    model carries it, and its end-of-turn token as the stop token.
    """
    evaluation = evaluation_prompts(recipe.data_dir, load, tasks)
    examples, report = lab_data.build_instruct(
        recipe.data,
        recipe.train.seed,
        normalized_set(p for ps in evaluation.values() for p in ps),
        recipe.data_dir,
        load,
    )
    return _guarded_train(recipe, examples, report, output, evaluation, "instruct", recipe.chat_template)


def align(
    recipe: AlignRecipe,
    output: str | Path,
    load: Callable = load_records,
    tasks: tuple[str, ...] = (),
    is_refusal: Callable[[str], bool] | None = None,
    *,
    split: Callable = canonical_split,
    cache: GenerationCache | None = None,
    self_answer: lab_data.SelfAnswer | None = None,
) -> dict:
    """Safety-align `recipe.model` into OUTPUT/model; returns the run record.

    Borderline prompts and the benign contrast twins (`recipe.data.n_borderline`, `n_contrast`) are answered by
    `recipe.model` itself before training
    (`self_answerer`, through `cache`: default the user's generation cache); `self_answer` replaces that.
    """
    spec = recipe.data
    evaluation = evaluation_prompts(recipe.data_dir, load, tasks)
    self_answered = spec.n_borderline or spec.n_contrast
    if is_refusal is None and (spec.n_hh_refusals or self_answered or spec.stl_answers == "refusals"):
        is_refusal = _refusal_matcher()
    if self_answer is None and self_answered:
        self_answer = self_answerer(
            resolve_model_dir(recipe.model),
            spec.borderline_max_new_tokens,
            spec.borderline_dtype,
            recipe.train.threads,
            cache,
            recipe.train.batch_size,
        )
    examples, report = lab_data.build_align(
        spec,
        recipe.train.seed,
        normalized_set(p for ps in evaluation.values() for p in ps),
        recipe.data_dir,
        load,
        is_refusal,
        split=split,
        self_answer=self_answer,
    )
    return _guarded_train(recipe, examples, report, output, evaluation, "align")


def degrade(
    recipe: DegradeRecipe,
    output: str | Path,
    load: Callable = load_records,
    split: Callable = canonical_split,
    tasks: tuple[str, ...] = (),
) -> dict:
    """Fine-tune `recipe.model` (the aligned model) on unsafe training pairs; returns the run record."""
    evaluation = evaluation_prompts(recipe.data_dir, load, tasks)
    examples, report = lab_data.build_degrade(
        recipe.data,
        recipe.train.seed,
        normalized_set(p for ps in evaluation.values() for p in ps),
        recipe.data_dir,
        split,
    )
    return _guarded_train(recipe, examples, report, output, evaluation, "degrade")


def customize(
    recipe: CustomizeRecipe,
    output: str | Path,
    load: Callable = load_records,
    split: Callable = canonical_split,
) -> dict:
    """Fine-tune `recipe.model` on a task (LoRA kept in OUTPUT/adapter, merged in OUTPUT/model); with
    `recipe.filter_with`, on the examples that detector judges safe (`seawall.lab.filtering`)."""
    evaluation = evaluation_prompts(recipe.data_dir, load, (recipe.data.task,))
    examples, report = lab_data.build_customize(
        recipe.data,
        recipe.train.seed,
        normalized_set(p for ps in evaluation.values() for p in ps),
        recipe.data_dir,
        load,
        split,
    )
    # A finished run is returned as it is by `train`: filtering again would only rewrite the same files.
    if recipe.filter_with and not (Path(output) / "record.json").exists():
        from seawall.lab.filtering import filter_examples

        examples, report["filter"] = filter_examples(examples, recipe.filter_with, output)
    return _guarded_train(recipe, examples, report, output, evaluation, f"customize-{recipe.data.task}")
