"""The shared-data registry: locating the folder, verifying checksums, caching, loading real sets."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from converge.data import registry
from converge.data.registry import (
    SETS,
    ImageSet,
    convert_channels,
    data_root,
    get_set,
    list_images,
    load_images,
)
from converge.errors import ConfigError, DataError


@pytest.fixture
def shared_data(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real shared data folder (the test is skipped where it is not available)."""
    try:
        root = data_root()
    except DataError:
        pytest.skip("shared benchmark data not available")
    if not (root / registry.CHECKSUM_FILE).is_file():
        pytest.skip(f"no {registry.CHECKSUM_FILE} in {root}")
    return root


@pytest.fixture
def set12_copy(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of Set12 with its checksum lines, used as CONVERGE_DATA."""
    root = tmp_path / "data"
    shutil.copytree(shared_data / "Set12", root / "Set12")
    lines = [line for line in (shared_data / registry.CHECKSUM_FILE).read_text().splitlines() if " Set12/" in line]
    (root / registry.CHECKSUM_FILE).write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("CONVERGE_DATA", str(root))
    return root


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _set_digest(hashes: list[str]) -> str:
    return hashlib.sha256("".join(f"{h}\n" for h in sorted(hashes)).encode()).hexdigest()


def test_data_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGE_DATA", str(tmp_path))
    assert data_root() == tmp_path


def test_data_root_falls_back_to_repository_then_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONVERGE_DATA", raising=False)
    fake_module = tmp_path / "repo" / "src" / "converge" / "data" / "registry.py"
    monkeypatch.setattr(registry, "__file__", str(fake_module))
    workdir = tmp_path / "elsewhere" / "checkout"
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)
    with pytest.raises(DataError, match="set CONVERGE_DATA"):
        data_root()
    (tmp_path / "elsewhere" / "shared" / "data").mkdir(parents=True)
    assert data_root() == Path.cwd().parent / "shared" / "data"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert data_root() == tmp_path / "shared" / "data"


def test_unknown_set_names_are_rejected_with_the_known_ones() -> None:
    with pytest.raises(DataError, match="unknown image set 'bsd100': choose one of .*set12"):
        get_set("bsd100")
    assert get_set("Set12") is SETS["set12"]


def test_missing_set_says_where_it_looked_and_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGE_DATA", str(tmp_path))
    with pytest.raises(DataError) as caught:
        list_images("bsd68")
    message = str(caught.value)
    assert f"not found at {tmp_path / 'BSD68'}" in message and "CONVERGE_DATA" in message
    assert "\n" not in message


def test_missing_checksum_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "Set12").mkdir()
    monkeypatch.setenv("CONVERGE_DATA", str(tmp_path))
    with pytest.raises(DataError, match="checksums.sha256 is missing"):
        list_images("set12")


def test_registry_table_matches_the_manifest(shared_data: Path) -> None:
    manifest = (shared_data / "MANIFEST.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\d+) [^|]+\|.*`([0-9a-f]{64})` \|$", manifest, flags=re.MULTILINE)
    assert {(folder, int(count), digest) for folder, count, digest in rows} == {
        (s.folder, s.file_count, s.digest) for s in SETS.values() if s.subset_of is None
    }
    assert all(name == name.lower() for name in SETS)


def test_real_set12_lists_twelve_images_of_the_documented_sizes(shared_data: Path) -> None:
    files = list_images("set12")
    assert [path.name for path in files] == [f"{i:02d}.png" for i in range(1, 13)]
    sizes = [Image.open(path).size for path in files]
    assert sizes == [(256, 256)] * 7 + [(512, 512)] * 5


def test_real_set12_loads_as_grayscale_tensors(shared_data: Path, image_reader: None) -> None:
    loaded = list(load_images("set12"))
    assert [name for name, _ in loaded] == [f"{i:02d}" for i in range(1, 13)]
    for index, (_, image) in enumerate(loaded):
        side = 256 if index < 7 else 512
        assert image.shape == (1, 1, side, side) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0


def test_colour_set_read_as_grayscale_reproduces_bsd68(shared_data: Path, image_reader: None) -> None:
    # The MANIFEST records that BSD68's testNNN is the 8-bit rgb2gray of the NNN-th CBSD68 image.
    _, derived = next(iter(load_images("cbsd68", channels=1)))
    _, stored = next(iter(load_images("bsd68")))
    assert derived.shape == stored.shape
    assert torch.equal(torch.round(derived * 255), torch.round(stored * 255))


def test_convert_channels_refuses_to_invent_colour() -> None:
    gray = torch.rand(1, 1, 4, 4)
    assert convert_channels(gray, None) is gray
    with pytest.raises(ConfigError, match="cannot convert 1-channel images to 3 channels"):
        convert_channels(gray, 3)


def test_verified_copy_passes_and_a_modified_byte_fails(set12_copy: Path) -> None:
    assert len(list_images("set12")) == 12
    target = set12_copy / "Set12" / "05.png"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match="05.png fails its checksum"):
        list_images("set12")


def test_missing_and_unexpected_files_are_reported(set12_copy: Path) -> None:
    extra = set12_copy / "Set12" / "13.png"
    shutil.copy(set12_copy / "Set12" / "01.png", extra)
    with pytest.raises(DataError, match=r"not listed in checksums.sha256 \(first: 13.png\)"):
        list_images("set12")
    extra.unlink()
    (set12_copy / "Set12" / "03.png").unlink()
    with pytest.raises(DataError, match=r"1 file\(s\) of set 'set12' are missing .*\(first: 03.png\)"):
        list_images("set12")


def test_verification_is_cached_until_a_file_changes(
    set12_copy: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    list_images("set12")
    marker = private_cache / "verified" / f"set12-{SETS['set12'].digest}"
    assert marker.is_file()
    hashed: list[Path] = []
    real_sha256 = registry._sha256_file
    monkeypatch.setattr(registry, "_sha256_file", lambda path: hashed.append(path) or real_sha256(path))
    list_images("set12")
    assert hashed == []
    target = set12_copy / "Set12" / "02.png"
    target.write_bytes(target.read_bytes() + b"\0")
    with pytest.raises(DataError, match="02.png fails its checksum"):
        list_images("set12")
    assert hashed


def _tiny_set(tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch, checksum_of_first: str | None):
    """Two real files under a fake set 'tiny' with a hand-written checksums file."""
    root = tmp_path / "fake"
    (root / "Tiny").mkdir(parents=True)
    hashes = []
    for name in ("01.png", "02.png"):
        shutil.copy(shared_data / "Set12" / name, root / "Tiny" / name)
        hashes.append(_sha256(root / "Tiny" / name))
    listed = [checksum_of_first or hashes[0], hashes[1]]
    (root / registry.CHECKSUM_FILE).write_text(
        f"{listed[0]}  Tiny/01.png\n{listed[1]} *Tiny/02.png\n{'0' * 64}  Other/01.png\n"
    )
    monkeypatch.setenv("CONVERGE_DATA", str(root))
    monkeypatch.setitem(SETS, "tiny", ImageSet("tiny", "Tiny", 1, 2, "test", _set_digest(hashes)))


def test_fake_checksum_file_is_checked_line_by_line(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny_set(tmp_path, shared_data, monkeypatch, checksum_of_first=None)
    assert [path.name for path in list_images("tiny")] == ["01.png", "02.png"]
    _tiny_set(tmp_path / "bad", shared_data, monkeypatch, checksum_of_first="f" * 64)
    with pytest.raises(DataError, match="01.png fails its checksum"):
        list_images("tiny")


def test_consistent_checksums_of_the_wrong_set_fail_the_set_digest(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny_set(tmp_path, shared_data, monkeypatch, checksum_of_first=None)
    monkeypatch.setitem(SETS, "tiny", ImageSet("tiny", "Tiny", 1, 2, "test", "a" * 64))
    with pytest.raises(DataError, match="do not match its registered digest"):
        list_images("tiny")


def test_wrong_file_count_is_reported(tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tiny_set(tmp_path, shared_data, monkeypatch, checksum_of_first=None)
    monkeypatch.setitem(SETS, "tiny", ImageSet("tiny", "Tiny", 1, 3, "test", SETS["tiny"].digest))
    with pytest.raises(DataError, match="has 2 files .* should have 3"):
        list_images("tiny")


def test_the_validation_split_is_held_out_of_the_colour_training_split(shared_data: Path) -> None:
    validation = {path.name for path in list_images("bsds-val32")}
    training = {path.name for path in list_images("cbsd400")}
    assert len(validation) == 32 and len(training) == 400 and not validation & training
    assert validation | training == {path.name for path in list_images("cbsd432")}
    assert get_set("bsds-val32").role == "validation" and get_set("cbsd400").role == "train"
