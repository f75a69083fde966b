"""`seawall eval …`: harmful-response rate, over-refusal, utility, whole experiments and their reports."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(
    help="Measure safety, over-refusal and utility; run and report the SafeGene experiment.",
    no_args_is_help=True,
)

ModelOpt = typer.Option(
    "smollm2-135m-instruct", "--model", "-m", help="Model reference (packaged name or folder)."
)
BackendOpt = typer.Option("transformers", "--backend", help="Generation backend: transformers, openai, vllm.")
NOpt = typer.Option(30, "--n", help="Prompts sampled per evaluation set (seeded).")
OutOpt = typer.Option(None, "--output", "-o", help="Write result.json and rows.jsonl to this folder.")
DataOpt = typer.Option(None, "--data-dir", help="Shared data folder (default: ../shared/data).")
TokensOpt = typer.Option(64, "--max-new-tokens", help="Tokens generated per answer (greedy).")
SeedOpt = typer.Option(0, "--seed", help="Sampling seed of the prompt subsets and bootstrap.")
BaseUrlOpt = typer.Option(
    None,
    "--base-url",
    help="openai backend: the endpoint, e.g. http://127.0.0.1:8000/v1 (default $OPENAI_BASE_URL).",
)
KeyEnvOpt = typer.Option(
    None,
    "--api-key-env",
    help="openai backend: environment variable holding the API key (default: $OPENAI_API_KEY if set).",
)


def _evaluator(
    model: str,
    backend: str,
    max_new_tokens: int,
    seed: int,
    data_dir: str | None,
    base_url: str | None = None,
    api_key_env: str | None = None,
):
    from seawall.errors import SeawallError
    from seawall.evaluate.generate import backend_generator
    from seawall.evaluate.harness import Decoding, Evaluator
    from seawall.generation.cache import GenerationCache, model_fingerprint

    decoding = Decoding(max_new_tokens=max_new_tokens, task_max_new_tokens=max_new_tokens)
    if backend != "openai" and (base_url or api_key_env):
        raise SeawallError(f"--base-url and --api-key-env are for --backend openai, not {backend!r}")
    if backend == "transformers":
        from seawall.lab.recipes import resolve_model_dir

        folder = resolve_model_dir(model)
        model_id = model_fingerprint(folder)
        generate = backend_generator(folder, decoding)
    elif backend == "openai":
        from seawall.generation.openai_backend import resolve_api_key, resolve_base_url

        url = resolve_base_url(base_url)
        # The endpoint is part of the cache key: one model name on two servers is two models.
        model_id = f"openai:{url}:{model}"
        options = {"base_url": url, "api_key": resolve_api_key(api_key_env)}
        generate = backend_generator(model, decoding, backend="openai", **options)
    else:
        model_id = f"{backend}:{model}"
        generate = backend_generator(model, decoding, backend=backend)
    return Evaluator(generate, model_id, decoding, GenerationCache(), seed, data_dir)


def _emit(result: dict, rows: list[dict], output: str | None) -> None:
    from seawall.evaluate.harness import write_rows
    from seawall.io import atomic_write_json

    if output:
        atomic_write_json(Path(output) / "result.json", result)
        write_rows(Path(output) / "rows.jsonl", rows)
    typer.echo(json.dumps(result, indent=2))


@app.command()
def safety(
    model: str = ModelOpt,
    detector: str | None = typer.Option(
        None, "--detector", help="Saved SecureBreak detector folder (second judge)."
    ),
    n: int = NOpt,
    backend: str = BackendOpt,
    max_new_tokens: int = TokensOpt,
    seed: int = SeedOpt,
    output: str | None = OutOpt,
    data_dir: str | None = DataOpt,
    base_url: str | None = BaseUrlOpt,
    api_key_env: str | None = KeyEnvOpt,
) -> None:
    """Harmful-response rate on HarmBench test, StrongREJECT, JBB harmful, SimpleSafetyTests, per judge."""
    from seawall.evaluate.judges import DetectorJudge, RefusalJudge, default_is_refusal

    judges = [RefusalJudge(default_is_refusal())] + ([DetectorJudge.load(detector)] if detector else [])
    _emit(
        *_evaluator(model, backend, max_new_tokens, seed, data_dir, base_url, api_key_env).safety(judges, n),
        output,
    )


@app.command()
def overrefusal(
    model: str = ModelOpt,
    n: int = NOpt,
    backend: str = BackendOpt,
    max_new_tokens: int = TokensOpt,
    seed: int = SeedOpt,
    output: str | None = OutOpt,
    data_dir: str | None = DataOpt,
    base_url: str | None = BaseUrlOpt,
    api_key_env: str | None = KeyEnvOpt,
) -> None:
    """Share of benign prompts refused (XSTest safe, JBB benign, CoCoNot contrast)."""
    from seawall.evaluate.judges import default_is_refusal

    _emit(
        *_evaluator(model, backend, max_new_tokens, seed, data_dir, base_url, api_key_env).overrefusal(
            default_is_refusal(), n
        ),
        output,
    )


@app.command()
def utility(
    model: str = ModelOpt,
    task: list[str] = typer.Option(["sst2", "ag_news", "boolq"], "--task", help="Task(s) to score."),
    n: int = typer.Option(100, "--n", help="Test examples per task (seeded)."),
    backend: str = BackendOpt,
    max_new_tokens: int = typer.Option(8, "--max-new-tokens", help="Tokens generated per answer."),
    seed: int = SeedOpt,
    output: str | None = OutOpt,
    data_dir: str | None = DataOpt,
    base_url: str | None = BaseUrlOpt,
    api_key_env: str | None = KeyEnvOpt,
) -> None:
    """Accuracy on each task's held-out split, answers parsed from free text."""
    _emit(
        *_evaluator(model, backend, max_new_tokens, seed, data_dir, base_url, api_key_env).utility(task, n),
        output,
    )


@app.command()
def run(
    config: str = typer.Argument(..., help="Experiment YAML (e.g. configs/smollm2-135m.yaml)."),
    output: str | None = typer.Option(None, "--output", "-o", help="Run folder (overrides the config's)."),
) -> None:
    """Run the whole experiment (resumable: finished steps are skipped), then write its report."""
    from seawall.evaluate.experiment import Experiment, load_config
    from seawall.evaluate.report import write_report

    experiment = Experiment(load_config(config, output=output))
    experiment.run()
    typer.echo(f"report: {write_report(experiment.root)}")


@app.command()
def report(
    source: str = typer.Argument(..., help="A results.json, or a run folder holding one."),
    output: str | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Markdown path (default: REPORT.md beside a run's results.json, NAME.md beside NAME.results.json).",
    ),
) -> None:
    """Markdown tables and PNG plots (safety–utility, per-category HRR, SafeGene layers) from a results.json alone."""
    from seawall.evaluate.report import write_report

    typer.echo(str(write_report(source, output)))
