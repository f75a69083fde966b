"""`seawall lab …`: instruct base models, and align, degrade and customize chat models on CPU."""

from __future__ import annotations

import json

import typer

app = typer.Typer(
    help="Fine-tuning recipes: instruction tuning of a base model, safety alignment, harmful fine-tuning, task "
    "customization.",
    no_args_is_help=True,
)

ConfigOpt = typer.Option(None, "--config", "-c", help="Recipe YAML (fields of the recipe's pydantic config).")
ModelOpt = typer.Option(
    None, "--model", "-m", help="Model reference (packaged name, folder, GGUF) to start from."
)
OutOpt = typer.Option(
    ..., "--output", "-o", help="Output folder (model/, adapter/, record.json); reruns resume."
)
DataOpt = typer.Option(None, "--data-dir", help="Shared data folder (default: ../shared/data).")


def _summary(record: dict) -> None:
    typer.echo(
        json.dumps(
            {k: record.get(k) for k in ("recipe", "steps", "train_time_s")}
            | {
                "data": record["data"]["sources"],
                "final_loss": record["losses"][-1] if record["losses"] else None,
            }
        )
    )


@app.command()
def instruct(
    output: str = OutOpt,
    model: str | None = ModelOpt,
    config: str | None = ConfigOpt,
    data_dir: str | None = DataOpt,
    chat_template: str | None = typer.Option(
        None,
        "--chat-template",
        help="auto (default: the model's own, else Gemma's turns or ChatML when the tokenizer knows their tokens, "
        "else a plain template), gemma, chatml, plain, or a .jinja file.",
    ),
) -> None:
    """Make a base model (default gemma3-270m) a chat model: a chat template and instruction SFT on Alpaca + GSM8K."""
    from seawall.lab import recipes
    from seawall.lab.config import InstructRecipe, load_yaml

    recipe = load_yaml(InstructRecipe, config, model=model, data_dir=data_dir, chat_template=chat_template)
    _summary(recipes.instruct(recipe, output))


@app.command()
def align(
    output: str = OutOpt,
    model: str | None = ModelOpt,
    config: str | None = ConfigOpt,
    data_dir: str | None = DataOpt,
    method: str = typer.Option(
        "sft",
        "--method",
        help="sft: supervised (AlignRecipe); dpo: preference pairs from the model's own samples judged by the "
        "detector and the refusal matcher (PreferenceRecipe).",
    ),
    detector: str | None = typer.Option(
        None,
        "--detector",
        help="dpo: the detector folder that judges samples (default: the default detector).",
    ),
) -> None:
    """Safety-align a chat model: SFT (harmful prompts → varied refusals, benign ones → answers) or DPO."""
    from seawall.errors import SeawallError
    from seawall.lab import recipes
    from seawall.lab.config import AlignRecipe, PreferenceRecipe, load_yaml

    if method == "sft":
        if detector is not None:
            raise SeawallError("--detector is for --method dpo (the SFT recipe judges nothing)")
        _summary(recipes.align(load_yaml(AlignRecipe, config, model=model, data_dir=data_dir), output))
    elif method == "dpo":
        from seawall.lab import preference

        recipe = load_yaml(PreferenceRecipe, config, model=model, data_dir=data_dir, detector=detector)
        _summary(preference.align_dpo(recipe, output))
    else:
        raise SeawallError(f"--method must be sft or dpo, got {method!r}")


@app.command()
def degrade(
    output: str = OutOpt,
    model: str | None = ModelOpt,
    config: str | None = ConfigOpt,
    data_dir: str | None = DataOpt,
) -> None:
    """Harmful fine-tuning of an aligned model on unsafe pairs of the SecureBreak/GPTFuzz TRAIN splits."""
    from seawall.lab import recipes
    from seawall.lab.config import DegradeRecipe, load_yaml

    _summary(recipes.degrade(load_yaml(DegradeRecipe, config, model=model, data_dir=data_dir), output))


@app.command()
def customize(
    output: str = OutOpt,
    task: str | None = typer.Option(
        None, "--task", help="sst2, ag_news or boolq (default: the config's, else sst2)."
    ),
    harmful_share: float | None = typer.Option(
        None,
        "--harmful-share",
        help="Share of task examples replaced by unsafe pairs (default: the config's, else 0).",
    ),
    n_train: int | None = typer.Option(
        None, "--n-train", help="Training examples (default: the config's, else 400)."
    ),
    filter_with: str | None = typer.Option(
        None,
        "--filter-with",
        help="A detector folder: drop the examples it judges unsafe before training (dropped ones in "
        "OUTPUT/filtered.dropped.jsonl, counts in the record).",
    ),
    model: str | None = ModelOpt,
    config: str | None = ConfigOpt,
    data_dir: str | None = DataOpt,
) -> None:
    """Task fine-tuning (LoRA kept in OUTPUT/adapter, merged in OUTPUT/model), optionally with harmful pairs mixed in
    and optionally filtered by a detector first."""
    from seawall.errors import SeawallError
    from seawall.lab import recipes
    from seawall.lab.config import CustomizeRecipe, load_yaml

    recipe = load_yaml(CustomizeRecipe, config, model=model, data_dir=data_dir, filter_with=filter_with)
    # Flags override the config file only when given, so a recipe file's data section is not silently replaced.
    flags = {"task": task, "harmful_share": harmful_share, "n_train": n_train}
    given = {name: value for name, value in flags.items() if value is not None}
    if given:
        try:
            recipe = CustomizeRecipe.model_validate(
                {**recipe.model_dump(), "data": {**recipe.data.model_dump(), **given}}
            )
        except ValueError as error:
            raise SeawallError(f"invalid --task/--harmful-share/--n-train: {error}") from error
    _summary(recipes.customize(recipe, output))


@app.command()
def scale(
    output: str = OutOpt,
    aligned: str = typer.Option(..., "--aligned", help="The aligned model (folder or packaged name)."),
    base: str = typer.Option(
        ..., "--base", help="The model it was aligned from (folder or packaged name): weight 0."
    ),
    weight: float = typer.Option(
        ..., "--weight", help="How much of the alignment to keep: 0 = the base, 1 = the aligned model."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an OUTPUT made from other inputs."),
) -> None:
    """Scale an alignment after the fact: base + weight × (aligned − base), no training (see docs/lab.md)."""
    from seawall.lab.scale import scale as scale_model

    record = scale_model(base, aligned, weight, output, overwrite=overwrite)
    typer.echo(json.dumps({k: record[k] for k in ("recipe", "config", "tensors", "train_time_s")}))
