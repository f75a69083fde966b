"""The lab recipes: align (safety SFT), degrade (harmful fine-tuning), customize (task fine-tuning)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from seawall.data import canonical_split, load_records
from seawall.data.hygiene import check_no_overlap, normalized_set
from seawall.errors import ModelError
from seawall.evaluate.suites import evaluation_prompts
from seawall.lab import data as lab_data
from seawall.lab.config import AlignRecipe, CustomizeRecipe, DegradeRecipe
from seawall.lab.train import ChatExample, train


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
) -> dict:
    check_no_overlap({f"{kind}-train": [e.prompt for e in examples]}, evaluation)
    model_dir = resolve_model_dir(recipe.model)
    record = {"recipe": kind, "config": recipe.model_dump(mode="json"), "data_report": report}
    return train(model_dir, examples, recipe.train, output, record=record)


def _refusal_matcher() -> Callable[[str], bool]:
    from seawall.detect import is_refusal

    return is_refusal


def align(
    recipe: AlignRecipe,
    output: str | Path,
    load: Callable = load_records,
    tasks: tuple[str, ...] = (),
    is_refusal: Callable[[str], bool] | None = None,
) -> dict:
    """Safety-align `recipe.model` into OUTPUT/model; returns the run record."""
    evaluation = evaluation_prompts(recipe.data_dir, load, tasks)
    examples, report = lab_data.build_align(
        recipe.data,
        recipe.train.seed,
        normalized_set(p for ps in evaluation.values() for p in ps),
        recipe.data_dir,
        load,
        is_refusal or (_refusal_matcher() if recipe.data.n_hh_refusals else None),
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
    """Fine-tune `recipe.model` on a task (LoRA kept in OUTPUT/adapter, merged in OUTPUT/model)."""
    evaluation = evaluation_prompts(recipe.data_dir, load, (recipe.data.task,))
    examples, report = lab_data.build_customize(
        recipe.data,
        recipe.train.seed,
        normalized_set(p for ps in evaluation.values() for p in ps),
        recipe.data_dir,
        load,
        split,
    )
    return _guarded_train(recipe, examples, report, output, evaluation, f"customize-{recipe.data.task}")
