"""`seawall guard ...`: run the guard proxy, query its audit log, check one pair."""

from __future__ import annotations

import json

import typer

app = typer.Typer(help="Post-generation safety filter: OpenAI-compatible proxy, audit log, one-off checks.")


@app.command()
def serve(
    config: str | None = typer.Option(None, "--config", "-c", help="YAML ServerConfig file."),
    host: str | None = typer.Option(None, help="Bind address (default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default 8080)."),
    upstream_url: str | None = typer.Option(None, help="OpenAI-compatible upstream base URL (…/v1)."),
    local_model: str | None = typer.Option(
        None, help="In-process model reference (default smollm2-135m-instruct)."
    ),
    detector: str | None = typer.Option(
        None,
        help="Detector folder, or `refusal` (a refusal-rate judge: blocks every compliant answer). "
        "Default: the project's trained default detector; an error if it has not been trained.",
    ),
    audit_db: str | None = typer.Option(
        None, help="SQLite audit log path (default <cache>/guard/audit.sqlite)."
    ),
    audit_url: str | None = typer.Option(
        None,
        "--audit-url",
        help="postgresql://user@host:port/db: decisions in PostgreSQL, shared by replicas (password in "
        "PGPASSWORD or ~/.pgpass), or an SQLite path.",
    ),
    access_log: bool | None = typer.Option(
        None, "--access-log/--no-access-log", help="uvicorn's per-request access log (default off)."
    ),
    allow_open: bool = typer.Option(
        False,
        "--allow-open",
        help="Serve a non-loopback --host without API keys (an open proxy); refused without this flag.",
    ),
) -> None:
    """Run the guard proxy in front of an upstream URL or the in-process local model."""
    import uvicorn
    from pydantic import ValidationError

    from seawall.errors import SeawallError
    from seawall.guard.config import ServerConfig
    from seawall.guard.server import build_app

    base = ServerConfig.from_yaml(config) if config else ServerConfig()
    overrides = {
        k: v
        for k, v in dict(
            host=host,
            port=port,
            upstream_url=upstream_url,
            local_model=local_model,
            detector=detector,
            audit_db=audit_db,
            audit=audit_url,
            access_log=access_log,
            allow_open=allow_open or None,
        ).items()
        if v is not None
    }
    try:
        cfg = ServerConfig.model_validate({**base.model_dump(), **overrides})
    except ValidationError as error:
        message = "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())
        raise SeawallError(f"guard serve: {message}") from None
    uvicorn.run(build_app(cfg), host=cfg.host, port=cfg.port, log_level="info", access_log=cfg.access_log)


@app.command("log")
def log_(
    db: str | None = typer.Option(None, "--db", help="Audit log path (default <cache>/guard/audit.sqlite)."),
    audit_url: str | None = typer.Option(
        None, "--audit-url", help="Read a PostgreSQL audit log instead: postgresql://user@host:port/db."
    ),
    since: str | None = typer.Option(None, help="Duration ago (30m, 2h, 7d) or an ISO time."),
    action: str | None = typer.Option(
        None, help="allow, block, flag, log, upstream_error or client_disconnect."
    ),
    category: str | None = typer.Option(None, help="Risk category."),
    limit: int = typer.Option(100, help="Most recent rows to show (0 = all)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Query the audit log of guard decisions, newest first."""
    from rich.console import Console
    from rich.table import Table

    from seawall.errors import SeawallError
    from seawall.guard.audit import query
    from seawall.guard.config import default_audit_db

    if db and audit_url:
        raise SeawallError("guard log: pass --db or --audit-url, not both")
    target = audit_url or db or default_audit_db()
    rows = query(target, since=since, action=action, category=category, limit=limit or None)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False))
        return
    table = Table(
        "time", "request", "endpoint", "model", "action", "category", "score", "latency ms", "error"
    )
    for r in rows:
        score = "-" if r["score"] is None else f"{r['score']:.3f}"
        table.add_row(
            r["time"],
            r["request_id"],
            r["endpoint"],
            r["model"] or "",
            r["action"],
            r["category"] or "",
            score,
            f"{r['latency_ms']:.1f}",
            r["error"] or "",
        )
    Console().print(table)
    typer.echo(f"{len(rows)} decision(s)")


@app.command()
def check(
    response: str = typer.Argument(..., help="The model's response."),
    prompt: str = typer.Option("", help="The prompt it answered."),
    detector: str | None = typer.Option(
        None, help="Detector folder or `refusal` (default: the project's trained default detector)."
    ),
) -> None:
    """Score one (prompt, response) pair and print the verdict as JSON."""
    from seawall.guard.detectors import resolve_detector
    from seawall.guard.guard import Guard

    guard = Guard(resolve_detector(detector))
    typer.echo(json.dumps(guard.check(prompt, response).to_dict(), indent=2))
    guard.close()
