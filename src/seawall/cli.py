"""The `seawall` command: one entry point, a sub-command group per layer."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.text import Text

from seawall import __version__
from seawall.data.cli import app as data_app
from seawall.detect.cli import app as detect_app
from seawall.errors import SeawallError
from seawall.evaluate.cli import app as eval_app
from seawall.gene.cli import app as gene_app
from seawall.guard.cli import app as guard_app
from seawall.lab.cli import app as lab_app
from seawall.models.cli import app as models_app

app = typer.Typer(
    name="seawall",
    help="Detect unsafe LLM responses, restore safety to fine-tuned models, and measure both.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(detect_app, name="detect")
app.add_typer(gene_app, name="gene")
app.add_typer(guard_app, name="guard")
app.add_typer(models_app, name="models")
app.add_typer(lab_app, name="lab")
app.add_typer(eval_app, name="eval")


@app.command()
def version() -> None:
    """Print the seawall version."""
    typer.echo(__version__)


@app.command()
def demo(
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="Shared data folder (default: ../shared/data)."
    ),
) -> None:
    """Run the main job on the embedded defaults."""
    from seawall.demo import run_demo

    run_demo(data_dir=data_dir)


def main() -> None:
    """Console entry point: turn SeawallError into one red line and exit code 2."""
    try:
        app()
    except SeawallError as error:
        Console(stderr=True).print(Text.assemble(("error: ", "bold red"), str(error)), soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
