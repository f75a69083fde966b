"""`seawall lab …`: align, degrade and customize chat models on CPU."""

from __future__ import annotations

import json

import typer

app = typer.Typer(
    help="Fine-tuning recipes: safety alignment, harmful fine-tuning, task customization.",
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
def align(
    output: str = OutOpt,
    model: str | None = ModelOpt,
    config: str | None = ConfigOpt,
    data_dir: str | None = DataOpt,
) -> None:
    """Safety-align a chat model: harmful prompts → varied refusals, Alpaca instructions → their answers."""
    from seawall.lab import recipes
    from seawall.lab.config import AlignRecipe, load_yaml

    _summary(recipes.align(load_yaml(AlignRecipe, config, model=model, data_dir=data_dir), output))


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
    task: str = typer.Option("sst2", "--task", help="sst2, ag_news or boolq."),
    harmful_share: float = typer.Option(
        0.0, "--harmful-share", help="Share of task examples replaced by unsafe pairs."
    ),
    n_train: int = typer.Option(400, "--n-train", help="Training examples."),
    model: str | None = ModelOpt,
    config: str | None = ConfigOpt,
    data_dir: str | None = DataOpt,
) -> None:
    """Task fine-tuning (LoRA kept in OUTPUT/adapter, merged in OUTPUT/model), optionally with harmful pairs mixed in."""
    from seawall.lab import recipes
    from seawall.lab.config import CustomizeRecipe, load_yaml

    recipe = load_yaml(CustomizeRecipe, config, model=model, data_dir=data_dir)
    data = recipe.data.model_copy(update={"task": task, "harmful_share": harmful_share, "n_train": n_train})
    recipe = CustomizeRecipe.model_validate({**recipe.model_dump(), "data": data.model_dump()})
    _summary(recipes.customize(recipe, output))
