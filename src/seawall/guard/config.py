"""Guard policy and server configuration: pydantic models loadable from one YAML file."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from seawall.errors import SeawallError
from seawall.paths import cache_dir

Action = Literal["block", "flag", "log"]

DEFAULT_REFUSAL = "I can't help with that. The response was withheld by a safety filter."


class CategoryRule(BaseModel):
    """Overrides for one risk category: its own threshold and/or action."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="P(unsafe) at or above which it is unsafe."
    )
    action: Action | None = Field(None, description="What to do with an unsafe response of this category.")


class StreamPolicy(BaseModel):
    """Incremental checking of streamed text (all sizes in characters)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    check_every: int = Field(64, ge=1, description="Run a window check after this many new characters.")
    window: int | None = Field(
        512,
        ge=1,
        description="Characters of the latest text each window check scores (None = all text so far).",
    )
    holdback: int = Field(
        32, ge=0, description="Checked characters still withheld, in case the next ones flip it."
    )


class Policy(BaseModel):
    """What the guard does with a verdict, and how it behaves when the detector fails."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action = Field(
        "block", description="block: replace with the refusal; flag: attach; log: observe."
    )
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Default threshold (None: the detector's)."
    )
    categories: dict[str, CategoryRule] = Field(default_factory=dict, description="Per-category overrides.")
    refusal: str = Field(DEFAULT_REFUSAL, description="Text sent instead of a blocked response.")
    fail_open: bool = Field(False, description="On detector error/timeout let the text through (logged).")
    timeout_s: float = Field(5.0, gt=0, description="Detector time limit per check.")
    stream: StreamPolicy = Field(default_factory=StreamPolicy)


def is_loopback(host: str) -> bool:
    """Whether binding `host` serves only this machine (localhost or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name (or "" = every interface) may resolve to anything


def default_audit_db() -> Path:
    """Where the audit log goes unless configured: under the seawall cache, never the working directory."""
    return cache_dir("guard") / "audit.sqlite"


class ServerConfig(BaseModel):
    """`seawall guard serve`: the proxy's upstream, detector, policy, limits, keys and audit log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    allow_open: bool = Field(
        False,
        description="Serve on a non-loopback host without API keys (an open proxy); refused unless set.",
    )
    port: int = Field(8080, ge=0, le=65535)
    detector: str | None = Field(
        None,
        description="Detector folder (seawall detect save) or a no-training backend name (`refusal`, a "
        "refusal-rate judge); None = the project's default trained detector, an error when it is missing.",
    )
    upstream_url: str | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1."
    )
    upstream_api_key_env: str | None = Field(None, description="Env var holding the upstream's API key.")
    local_model: str | None = Field(
        None, description="In-process transformers model (used when no upstream_url)."
    )
    policy: Policy = Field(default_factory=Policy)
    api_keys_file: str | None = Field(None, description="File with one accepted bearer key per line.")
    api_keys_env: str | None = Field(None, description="Env var with comma-separated accepted bearer keys.")
    access_log: bool = Field(
        False, description="uvicorn's per-request access log (the audit log already records every decision)."
    )
    max_body_bytes: int = Field(1_000_000, ge=1)
    max_tokens: int = Field(
        1024, ge=1, description="Largest max_tokens a client may ask for (also the default)."
    )
    max_concurrency: int = Field(
        64, ge=1, description="Requests in flight (/v1/classify included); more get 429."
    )
    classify_max_pairs: int = Field(256, ge=1, description="Pairs one /v1/classify call may hold.")
    classify_max_chars: int = Field(
        100_000,
        ge=1,
        description="Characters (prompts + responses) one /v1/classify call may hold; more → 413.",
    )
    classify_workers: int = Field(
        1, ge=1, description="Detector threads of /v1/classify, apart from those checking proxied answers."
    )
    batch_wait_ms: float = Field(
        2.0,
        ge=0,
        description="Concurrent checks arriving within this many milliseconds of the first share one detector "
        "call (0: one call per check).",
    )
    max_batch: int = Field(
        32, ge=1, description="Pairs one shared detector call may hold; a full batch is scored at once."
    )
    max_inflight_batches: int = Field(
        1,
        ge=1,
        description="Shared detector calls running at once (per batcher); checks arriving meanwhile gather, up "
        "to max_batch, for the next call. A call still running when its checks have all timed out gives up its "
        "slot (seawall_detector_batches_abandoned_total).",
    )
    request_timeout_s: float = Field(60.0, gt=0, description="Upstream time limit; exceeded → 504.")
    audit: str | None = Field(
        None,
        description="Where decisions go: a postgresql:// URL (one table shared by replicas; the password in "
        "PGPASSWORD or ~/.pgpass, not here) or an SQLite file path. None: audit_db, else the default SQLite file.",
    )
    audit_db: str | None = Field(
        None, description="SQLite audit log path (None: <cache>/guard/audit.sqlite)."
    )
    audit_pool_size: int = Field(
        4, ge=1, description="PostgreSQL connections (and writer threads) of this proxy's audit log."
    )
    audit_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Longest wait for a PostgreSQL connection before a decision counts as unwritten.",
    )
    audit_fail_open: bool = Field(
        False,
        description="When a decision cannot be written, release the answer anyway (logged and counted); "
        "default: withhold it (503).",
    )
    audit_store_text: bool = Field(False, description="Also store prompt/response text (off: hashes only).")
    protect_metrics: bool = Field(
        False, description="Require an API key on /metrics as well (/healthz always stays open)."
    )
    audit_synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL",
        description="SQLite synchronous mode: NORMAL survives process crashes, FULL also power loss.",
    )

    @model_validator(mode="after")
    def _one_upstream(self) -> ServerConfig:
        if self.upstream_url and self.local_model:
            raise ValueError("set either upstream_url or local_model, not both")
        keyed = bool(self.api_keys_file or self.api_keys_env)
        if self.protect_metrics and not keyed:
            raise ValueError("protect_metrics needs API keys: set api_keys_file or api_keys_env")
        if not keyed and not is_loopback(self.host) and not self.allow_open:
            raise ValueError(
                f"host {self.host!r} is reachable from other machines and no API keys are set: that is an open "
                "proxy; set api_keys_file or api_keys_env, or allow_open: true (--allow-open) if it is intended"
            )
        if self.batch_wait_ms / 1000 >= self.policy.timeout_s:
            raise ValueError(
                f"batch_wait_ms {self.batch_wait_ms:g} is not below the detector time limit policy.timeout_s "
                f"{self.policy.timeout_s:g}s: every check would time out while its batch gathers"
            )
        if self.audit and self.audit_db:
            raise ValueError("set either audit (a postgresql:// URL or an SQLite path) or audit_db, not both")
        return self

    def audit_target(self) -> str:
        """Where the audit log is: `audit` (URL or path), else `audit_db`, else the default under the cache."""
        return self.audit or self.audit_db or str(default_audit_db())

    @classmethod
    def from_yaml(cls, path: str | Path) -> ServerConfig:
        """Load the server config from a YAML file (unknown keys are errors)."""
        path = Path(path)
        if not path.is_file():
            raise SeawallError(f"guard config {path} does not exist")
        try:
            return cls.model_validate(yaml.safe_load(path.read_text()) or {})
        except ValueError as error:
            raise SeawallError(f"guard config {path}: {error}") from error
