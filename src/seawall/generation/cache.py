"""A disk cache of generations keyed by (model fingerprint, messages, decoding settings).

The model fingerprint covers what changes a model's outputs: its weights, tokenizer and chat template, and the dtype
the weights run in (bf16 and fp32 greedy generations of SmolLM2 differ in ~5% of tokens).

SQLite gives atomic, concurrent-safe appends: a crash mid-batch loses at most that batch, never corrupts the
file. A rerun computes only the conversations whose key is missing, so changing the model (a new fingerprint),
a prompt or a decoding setting recomputes exactly what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from seawall.paths import cache_dir

Messages = list[dict[str, str]]
_TEXT_FILES = {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"}
_FINGERPRINTS: dict[tuple, str] = {}


def model_fingerprint(model_dir: str | os.PathLike, dtype: str = "auto") -> str:
    """A content hash of a model folder: weights (`seawall.models.checkpoint.fingerprint`) plus tokenizer and chat
    template, which change generations too; memoised per (path, sizes, mtimes) because hashing weights is slow.

    `dtype` is the one the generations run in, `auto | float32 | bfloat16` resolved as the transformers backend
    resolves its own (auto: bf16 on CPUs with bf16 units): a bf16 fingerprint differs from the fp32 one, which is
    the plain content hash, so caches written in fp32 stay valid.
    """
    from seawall.models.checkpoint import fingerprint
    from seawall.models.precision import resolve_precision

    resolved = resolve_precision(dtype, "dtype")

    root = Path(model_dir)
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    stamp = (str(root.resolve()), *((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if stamp not in _FINGERPRINTS:
        # Only what changes generations: bookkeeping files such as the models cache's completion marker would
        # otherwise give the same weights different keys depending on where they were loaded from.
        weights = {
            name: sha
            for name, sha in fingerprint(root)["files"].items()
            if name.endswith(".safetensors") or name == "config.json"
        }
        digest = hashlib.sha256(json.dumps(weights, sort_keys=True).encode())
        for path in files:
            if path.name in _TEXT_FILES:
                digest.update(path.name.encode() + path.read_bytes())
        _FINGERPRINTS[stamp] = "sha256:" + digest.hexdigest()
    if resolved == "float32":
        return _FINGERPRINTS[stamp]
    return "sha256:" + hashlib.sha256(f"{_FINGERPRINTS[stamp]}|dtype={resolved}".encode()).hexdigest()


def cache_key(model: str, messages: Messages, decoding: Mapping[str, Any]) -> str:
    """The sha256 of the canonical JSON of (model fingerprint, messages, decoding settings)."""
    blob = json.dumps(
        [model, messages, dict(decoding)], sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class GenerationCache:
    """Generations stored in one SQLite file (default: $SEAWALL_CACHE/generations/generations.sqlite)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else cache_dir("generations") / "generations.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, model TEXT, messages TEXT,"
                " decoding TEXT, output TEXT, created REAL)"
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        """Stored outputs for those of `keys` that are present."""
        found: dict[str, str] = {}
        with self._connect() as db:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                found.update(db.execute(f"SELECT key, output FROM generations WHERE key IN ({marks})", chunk))
        return found

    def put_many(self, rows: Sequence[tuple[str, str, Messages, Mapping[str, Any], str]]) -> None:
        """Store (key, model, messages, decoding, output) rows in one transaction."""
        now = time.time()
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        key,
                        model,
                        json.dumps(msgs, ensure_ascii=False),
                        json.dumps(dict(dec), sort_keys=True),
                        out,
                        now,
                    )
                    for key, model, msgs, dec, out in rows
                ],
            )

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM generations").fetchone()[0])

    def generate(
        self,
        generate: Callable[[list[Messages]], list[str]],
        conversations: Sequence[Messages],
        model: str,
        decoding: Mapping[str, Any],
        chunk_size: int = 32,
    ) -> list[str]:
        """Outputs for `conversations`, calling `generate` only on missing ones (stored chunk by chunk)."""
        keys = [cache_key(model, list(c), decoding) for c in conversations]
        found = self.get_many(keys)
        todo: dict[str, Messages] = {}
        for key, conversation in zip(keys, conversations, strict=True):
            if key not in found and key not in todo:
                todo[key] = list(conversation)
        self.hits += len(keys) - sum(1 for k in keys if k in todo)
        self.misses += len(todo)
        items = list(todo.items())
        for start in range(0, len(items), chunk_size):
            chunk = items[start : start + chunk_size]
            outputs = generate([c for _, c in chunk])
            if len(outputs) != len(chunk):
                raise RuntimeError(
                    f"generator returned {len(outputs)} outputs for {len(chunk)} conversations"
                )
            self.put_many([(k, model, c, decoding, o) for (k, c), o in zip(chunk, outputs, strict=True)])
            found.update({k: o for (k, _), o in zip(chunk, outputs, strict=True)})
        return [found[k] for k in keys]
