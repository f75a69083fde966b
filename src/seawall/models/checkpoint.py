"""Streaming safetensors I/O for (sharded) Hugging Face checkpoints, validation, and architecture fingerprints.

Tensors are read one at a time through `safetensors.safe_open` (memory-mapped), and written shard by shard, so a
7B+ checkpoint never has to fit in memory: peak memory is about the tensors a caller holds at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from seawall.errors import ModelError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
DEFAULT_SHARD_BYTES = 2 * 1024**3

_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


def read_header(file: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Parse a safetensors header without touching tensor data; fail clearly on a truncated or corrupt file."""
    file = Path(file)
    try:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            raw_len = handle.read(8)
            if len(raw_len) < 8:
                raise ModelError(
                    f"{file}: truncated safetensors file ({size} bytes, no header); re-download it"
                )
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > size - 8:
                raise ModelError(
                    f"{file}: truncated safetensors file (header claims {header_len} bytes, file has {size}); "
                    "re-download or re-save it"
                )
            header = json.loads(handle.read(header_len))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{file}: cannot read safetensors header ({error})") from error
    header.pop("__metadata__", None)
    end = 0
    for name, info in header.items():
        start, stop = info["data_offsets"]
        expected = math.prod(info["shape"]) * _DTYPE_BYTES.get(info["dtype"], 0)
        if _DTYPE_BYTES.get(info["dtype"]) and stop - start != expected:
            raise ModelError(f"{file}: tensor {name!r} has {stop - start} bytes, expected {expected}")
        end = max(end, stop)
    if 8 + header_len + end > size:
        raise ModelError(
            f"{file}: truncated safetensors file ({size} bytes, tensors need {8 + header_len + end}); "
            "re-download or re-save it"
        )
    return header


def _check_finite(tensor: Any, name: str, file: Path) -> None:
    import torch

    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ModelError(f"{file}: tensor {name!r} contains {bad} NaN/Inf values; the checkpoint is corrupt")


class Checkpoint:
    """A read-only view of a safetensors checkpoint folder (single file or sharded with an index), read lazily."""

    def __init__(self, path: str | os.PathLike, validate: bool = True) -> None:
        path = Path(path)
        if path.is_file():
            self.root = path.parent
            files = [path]
            weight_map = None
        elif path.is_dir():
            self.root = path
            index = path / INDEX_NAME
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text())["weight_map"]
                except (json.JSONDecodeError, KeyError) as error:
                    raise ModelError(f"{index}: not a valid safetensors index ({error})") from error
                files = [path / f for f in dict.fromkeys(weight_map.values())]
            else:
                files = sorted(path.glob("*.safetensors"))
                weight_map = None
                if not files:
                    raise ModelError(
                        f"{path}: no *.safetensors files and no {INDEX_NAME}; "
                        "convert the model with save_pretrained(safe_serialization=True)"
                    )
        else:
            raise ModelError(f"{path}: no such checkpoint file or folder")
        self.validate = validate
        self.files = files
        self._headers: dict[Path, dict[str, dict[str, Any]]] = {}
        self._where: dict[str, Path] = {}
        for file in files:
            if not file.is_file():
                raise ModelError(f"{file}: listed in {INDEX_NAME} but missing; the checkpoint is incomplete")
            header = read_header(file)
            self._headers[file] = header
            for name in header:
                self._where[name] = file
        if weight_map is not None:
            missing = [n for n, f in weight_map.items() if self._where.get(n) != self.root / f]
            if missing:
                raise ModelError(
                    f"{self.root}: tensor {missing[0]!r} is in {INDEX_NAME} but not in its shard"
                )

    @property
    def config(self) -> dict[str, Any]:
        """The folder's config.json as a dict ({} when absent)."""
        config = self.root / "config.json"
        return json.loads(config.read_text()) if config.is_file() else {}

    def names(self) -> list[str]:
        """All tensor names, in file order."""
        return list(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def __len__(self) -> int:
        return len(self._where)

    def file_of(self, name: str) -> Path:
        """The shard that holds `name`."""
        return self._where[self._require(name)]

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape, from the header (no data read)."""
        return tuple(self._headers[self.file_of(name)][name]["shape"])

    def dtype(self, name: str) -> str:
        """A tensor's safetensors dtype string (e.g. 'F32', 'BF16')."""
        return self._headers[self.file_of(name)][name]["dtype"]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape, from the headers."""
        return {n: tuple(h[n]["shape"]) for h in self._headers.values() for n in h}

    def _require(self, name: str) -> str:
        if name not in self._where:
            raise ModelError(f"{self.root}: checkpoint has no tensor {name!r}")
        return name

    def get(self, name: str) -> Any:
        """Load one tensor (validated finite unless validate=False)."""
        from safetensors import safe_open

        file = self.file_of(name)
        # A fresh handle per tensor: the memory map is released right after the copy, so touched pages of a
        # multi-GB shard do not pile up in the process's resident memory.
        try:
            with safe_open(str(file), framework="pt") as handle:
                tensor = handle.get_tensor(name)
        except Exception as error:  # safetensors raises its own SafetensorError type
            raise ModelError(f"{file}: cannot read tensor {name!r} ({error})") from error
        if self.validate:
            _check_finite(tensor, name, file)
        return tensor

    def iter_tensors(self, names: Iterable[str] | None = None) -> Iterator[tuple[str, Any]]:
        """Yield (name, tensor) one at a time, shard by shard, so only one tensor is materialised per step."""
        wanted = self.names() if names is None else [self._require(n) for n in names]
        order = {f: i for i, f in enumerate(self.files)}
        for name in sorted(wanted, key=lambda n: order[self._where[n]]):
            yield name, self.get(name)


def open_checkpoint(path: str | os.PathLike, validate: bool = True) -> Checkpoint:
    """Open a checkpoint folder or a single .safetensors file for lazy reading."""
    return Checkpoint(path, validate=validate)


_TORCH_TO_ST = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}


class ShardedWriter:
    """Write tensors shard by shard into a folder, with model.safetensors.index.json when there is >1 shard.

    Each tensor's bytes go straight to a scratch file, so memory stays at one tensor however large a shard is;
    the shard is assembled (header + bytes) when it is full. Use inside `seawall.io.atomic_dir` so a failed run
    leaves nothing behind.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        max_shard_bytes: int = DEFAULT_SHARD_BYTES,
        prefix: str = "model",
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_shard_bytes = max_shard_bytes
        self.prefix = prefix
        self.metadata = {"format": "pt", **(metadata or {})}
        self._entries: dict[str, dict[str, Any]] = {}
        self._offset = 0
        self._raw: Any = None
        self._shards: list[tuple[str, list[str]]] = []
        self._total_bytes = 0
        self._seen: set[str] = set()

    def add(self, name: str, tensor: Any, validate: bool = True) -> None:
        """Write one tensor; closes the current shard first when it would exceed max_shard_bytes."""
        import torch

        if name in self._seen:
            raise ModelError(f"tensor {name!r} written twice to {self.folder}")
        if validate:
            _check_finite(tensor, name, self.folder)
        dtype = _TORCH_TO_ST.get(str(tensor.dtype).removeprefix("torch."))
        if dtype is None:
            raise ModelError(f"tensor {name!r}: dtype {tensor.dtype} cannot be stored in safetensors")
        self._seen.add(name)
        data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
        if self._entries and self._offset + data.nbytes > self.max_shard_bytes:
            self._flush()
        if self._raw is None:
            self._raw = open(self.folder / f".{self.prefix}-{len(self._shards) + 1:05d}.raw", "w+b")  # noqa: SIM115
        self._raw.write(data)
        self._entries[name] = {
            "dtype": dtype,
            "shape": list(tensor.shape),
            "data_offsets": [self._offset, self._offset + data.nbytes],
        }
        self._offset += data.nbytes
        self._total_bytes += data.nbytes

    def _flush(self) -> None:
        import shutil

        if not self._entries:
            return
        file = f"{self.prefix}-{len(self._shards) + 1:05d}.safetensors.part"
        header = json.dumps({"__metadata__": self.metadata, **self._entries}, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)
        with open(self.folder / file, "wb") as out:
            out.write(struct.pack("<Q", len(header)))
            out.write(header)
            self._raw.seek(0)
            shutil.copyfileobj(self._raw, out, 16 << 20)
        raw_path = Path(self._raw.name)
        self._raw.close()
        raw_path.unlink()
        self._raw = None
        self._shards.append((file, list(self._entries)))
        self._entries = {}
        self._offset = 0

    def close(self) -> list[Path]:
        """Finish the last shard, give shards their final names, write the index; return the files written."""
        self._flush()
        total = len(self._shards)
        if total == 0:
            raise ModelError(f"no tensors were written to {self.folder}")
        written: list[Path] = []
        weight_map: dict[str, str] = {}
        for i, (part, names) in enumerate(self._shards, start=1):
            final = (
                f"{self.prefix}.safetensors"
                if total == 1
                else f"{self.prefix}-{i:05d}-of-{total:05d}.safetensors"
            )
            os.replace(self.folder / part, self.folder / final)
            written.append(self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
        if total > 1:
            index = {"metadata": {"total_size": self._total_bytes}, "weight_map": weight_map}
            (self.folder / f"{self.prefix}.safetensors.index.json").write_text(
                json.dumps(index, indent=2) + "\n"
            )
        return written


def sha256_file(file: str | os.PathLike, block: int = 1 << 20) -> str:
    """The sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _layer_count(shapes: dict[str, tuple[int, ...]]) -> int:
    layers = set()
    for name in shapes:
        parts = name.split(".")
        for i, part in enumerate(parts[:-1]):
            if part in ("layers", "h", "blocks") and parts[i + 1].isdigit():
                layers.add(int(parts[i + 1]))
                break
    return len(layers)


def architecture_digest(model_type: str | None, modules: dict[str, Any]) -> str:
    """A short stable digest of (model type, tensor names and shapes): equal digests mean interchangeable layouts."""
    payload = json.dumps(
        {"model_type": model_type, "modules": {k: list(v) for k, v in sorted(modules.items())}},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def fingerprint(model_dir: str | os.PathLike, checksums: bool = True) -> dict[str, Any]:
    """Describe a checkpoint: model_type, num_layers, hidden_size, modules {name: shape}, num_parameters, files {name: sha256}, arch_digest."""
    ckpt = open_checkpoint(model_dir, validate=False)
    config = ckpt.config
    shapes = ckpt.shapes()
    modules = {name: list(shape) for name, shape in sorted(shapes.items())}
    model_type = config.get("model_type")
    text_config = config.get("text_config") or {}
    num_layers = config.get("num_hidden_layers", text_config.get("num_hidden_layers")) or _layer_count(shapes)
    hidden = config.get("hidden_size", text_config.get("hidden_size"))
    return {
        "model_type": model_type,
        "num_layers": num_layers,
        "hidden_size": hidden,
        "num_parameters": int(sum(math.prod(s) for s in shapes.values())),
        "arch_digest": architecture_digest(model_type, modules),
        "modules": modules,
        "files": {f.name: (sha256_file(f) if checksums else None) for f in ckpt.files},
    }


def first_mismatch(
    expected: dict[str, Any], actual: dict[str, Any], names: Iterable[str] | None = None
) -> str | None:
    """Compare two {module: shape} maps (over `names` if given); describe the first difference, or None."""
    for name in sorted(expected if names is None else names):
        want = expected.get(name)
        have = actual.get(name)
        if have is None:
            return f"module {name!r} (shape {list(want) if want is not None else '?'}) is missing"
        if want is not None and list(want) != list(have):
            return f"module {name!r} has shape {list(have)}, expected {list(want)}"
    return None


def require_same_architecture(
    expected: dict[str, Any], actual: dict[str, Any], what: str, names: Iterable[str] | None = None
) -> None:
    """Raise ModelError naming the first mismatching module and shape between two {module: shape} maps."""
    problem = first_mismatch(expected, actual, names)
    if problem:
        raise ModelError(f"{what}: architecture mismatch: {problem}")
