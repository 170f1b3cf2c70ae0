"""The benchmark and training sets of the shared data folder, verified against their checksums.

Data never downloads: the sets live in one shared folder (``CONVERGE_DATA``, else ``../shared/data``
next to the repository) described by its ``MANIFEST.md``. The first use of a set hashes every file
against ``checksums.sha256`` and the set digest below; a small marker in the cache folder then lets
later runs skip the hashing for as long as no file's size or modification time changes.

Example::

    >>> from converge.data.registry import load_images
    >>> for name, image in load_images("set12"):  # doctest: +SKIP
    ...     print(name, tuple(image.shape))        # "01 (1, 1, 256, 256)", ...
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from converge.color import rgb_to_gray
from converge.atomic import write_text_atomic
from converge.errors import ConfigError, DataError
from converge.imageio import IMAGE_SUFFIXES

CHECKSUM_FILE = "checksums.sha256"


@dataclass(frozen=True)
class ImageSet:
    """One image set of the shared data folder.

    ``folder`` is relative to :func:`data_root`; ``channels`` is 1 (grayscale) or 3 (RGB); ``role`` is
    ``"test"`` for benchmarks, ``"train"`` for training sets and ``"validation"`` for the images that
    choose checkpoints, seeds and hyper-parameters (held out of training, never a test set).
    ``digest`` is the MANIFEST's set digest of the folder: the sha256 of the sorted per-file sha256 hex
    strings, each followed by a newline (file names are not part of it).

    A set may be a part of another one's folder (``subset_of`` names that set): the files whose stems
    are in ``included``, or all but those in ``excluded``. The whole folder is verified first.
    """

    name: str
    folder: str
    channels: int
    file_count: int
    role: str
    digest: str
    subset_of: str | None = None
    included: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()


# The 32 BSDS500 "val" images of CBSD432: in neither Train400 (BSDS500 train + test) nor any test set.
BSDS_VALIDATION = (
    "156065", "361010", "37073", "376043", "38082", "38092", "385039", "41033", "41069", "42012", "42049",
    "43074", "45096", "54082", "55073", "58060", "62096", "65033", "66053", "69015", "69020", "69040",
    "76053", "78004", "8023", "85048", "86000", "86016", "86068", "87046", "89072", "97033",
)
_CBSD432_DIGEST = "d158b5f389045891973a523fb279468b229b740c0ea50e4355a70207198e7160"

SETS: dict[str, ImageSet] = {
    image_set.name: image_set
    for image_set in (
        ImageSet("set12", "Set12", 1, 12, "test",
                 "861f8fb82ce67c46f18cae758284d1c8721a1d65d9cb75d62ad198b3826d0db3"),
        ImageSet("bsd68", "BSD68", 1, 68, "test",
                 "72149ba0602c337d11857a57e86e2a6ab4e99b3976d22b4bd5596cd00d395435"),
        ImageSet("urban100", "Urban100", 1, 100, "test",
                 "73d86bce3b74e6ad27cc45953a9bf60ea71f4b9cf6faeef148274ba6523c2189"),
        ImageSet("cbsd68", "CBSD68", 3, 68, "test",
                 "cd4743066ef9b3aa38c0cc76b035de7163c2d45e30e1a9f3907a5591b7bdc7b1"),
        ImageSet("kodak24", "Kodak24", 3, 24, "test",
                 "75f1285533618e9b304140ca220516bce1e6e6e8eea4d54f5ad44ea12ed4383f"),
        ImageSet("set5", "Set5", 3, 5, "test",
                 "c497003189bc302f02578d200ac23553154508dcdba3b80e4710e86017c9aa0f"),
        ImageSet("classic5", "Classic5", 1, 5, "test",
                 "d8095c236a28ed80a788e0a01e068356cb14aa87dee7ae3f6c0cc74b31a6ac42"),
        ImageSet("live1", "LIVE1", 3, 29, "test",
                 "440fb70d5cbf10b4bd77e49a50eec36ab95bcfdb23172e73abe3b2616e191af0"),
        ImageSet("train400", "Train400", 1, 400, "train",
                 "a33edbaea51ca57d38aad4ab009e347b1986d82bee8427a8c59fb6b9f794011c"),
        ImageSet("cbsd432", "CBSD432", 3, 432, "train", _CBSD432_DIGEST),
        ImageSet("bsds-val32", "CBSD432", 3, 32, "validation", _CBSD432_DIGEST,
                 subset_of="cbsd432", included=BSDS_VALIDATION),
        ImageSet("cbsd400", "CBSD432", 3, 400, "train", _CBSD432_DIGEST,
                 subset_of="cbsd432", excluded=BSDS_VALIDATION),
    )
}


def data_root() -> Path:
    """The shared data folder: ``$CONVERGE_DATA``, else the first existing ``../shared/data`` next to the
    repository root or the current working directory."""
    configured = os.environ.get("CONVERGE_DATA")
    if configured:
        return Path(configured).expanduser()
    repository_root = Path(__file__).resolve().parents[3]
    candidates = [repository_root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked_in = ", ".join(str(candidate) for candidate in candidates)
    raise DataError(f"no shared data folder found (looked in {looked_in}): set CONVERGE_DATA to the folder holding it")


def cache_root() -> Path:
    """Where verification markers live: ``$CONVERGE_CACHE``, else ``$XDG_CACHE_HOME/converge``, else
    ``~/.cache/converge``."""
    configured = os.environ.get("CONVERGE_CACHE")
    if configured:
        return Path(configured).expanduser()
    xdg_cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg_cache) if xdg_cache else Path.home() / ".cache") / "converge"


def get_set(name: str) -> ImageSet:
    """The registry entry of a set, by its lowercase name (``"set12"``, ``"cbsd68"``, ...)."""
    try:
        return SETS[name.lower()]
    except KeyError:
        known = ", ".join(sorted(SETS))
        raise DataError(f"unknown image set {name!r}: choose one of {known}") from None


def list_images(name: str) -> list[Path]:
    """The sorted image files of a set, after checking them against the checksums (once per change)."""
    image_set = get_set(name)
    if image_set.subset_of is not None:
        files = list_images(image_set.subset_of)
        if image_set.included:
            return [path for path in files if path.stem in image_set.included]
        return [path for path in files if path.stem not in image_set.excluded]
    root = data_root()
    folder = root / image_set.folder
    if not folder.is_dir():
        raise DataError(
            f"image set {image_set.name!r} not found at {folder}: "
            "set CONVERGE_DATA to the folder holding the shared data"
        )
    expected = _expected_hashes(root, image_set)
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    _check_file_names(image_set, folder, files, expected)
    fingerprint = [[path.name, path.stat().st_size, path.stat().st_mtime_ns] for path in files]
    marker = cache_root() / "verified" / f"{image_set.name}-{image_set.digest}"
    record = {"folder": str(folder.resolve()), "files": fingerprint}
    if _read_marker(marker) != record:
        _verify_hashes(image_set, files, expected)
        _write_marker(marker, record)
    return files


def load_images(name: str, channels: int | None = None) -> Iterator[tuple[str, Tensor]]:
    """Yield ``(file stem, image)`` for every image of a set, in sorted order.

    Each image is ``(1, C, H, W)`` float32 in [0, 1] with the set's own channel count, or ``channels``
    when given (see :func:`convert_channels`: colour sets can be read as grayscale).
    """
    from converge.imageio import read_image

    image_set = get_set(name)
    for path in list_images(name):
        image = read_image(path)
        if image.shape[1] != image_set.channels:
            raise DataError(
                f"{path} has {image.shape[1]} channels but set {image_set.name!r} should have "
                f"{image_set.channels}: restore the file from the shared data"
            )
        yield path.stem, convert_channels(image, channels)


def convert_channels(image: Tensor, channels: int | None) -> Tensor:
    """Return ``(B, C, H, W)`` ``image`` with ``channels`` channels (``None`` keeps them).

    Colour to grayscale is MATLAB ``rgb2gray`` rounded to 8-bit levels, which is how the stored
    grayscale sets (BSD68, Train400) were made from their colour originals; grayscale cannot become colour.
    """
    if channels is None or channels == image.shape[1]:
        return image
    if channels == 1 and image.shape[1] == 3:
        return torch.round(rgb_to_gray(image) * 255.0) / 255.0
    raise ConfigError(
        f"cannot convert {image.shape[1]}-channel images to {channels} channels: use channels=1, 3 or None"
    )


def _expected_hashes(root: Path, image_set: ImageSet) -> dict[str, str]:
    """File name -> sha256 for the set's lines of ``checksums.sha256`` (``sha256sum`` text or binary format)."""
    checksum_path = root / CHECKSUM_FILE
    if not checksum_path.is_file():
        raise DataError(f"{checksum_path} is missing: point CONVERGE_DATA to a complete copy of the shared data")
    prefix = f"{image_set.folder}/"
    expected = {}
    for line in checksum_path.read_text().splitlines():
        if not line.strip():
            continue
        digest, _, relative = line.partition(" ")
        relative = relative.lstrip(" *")
        if relative.startswith(prefix):
            expected[relative[len(prefix) :]] = digest.lower()
    return expected


def _check_file_names(image_set: ImageSet, folder: Path, files: list[Path], expected: dict[str, str]) -> None:
    names = {path.name for path in files}
    missing = sorted(set(expected) - names)
    if missing:
        raise DataError(
            f"{len(missing)} file(s) of set {image_set.name!r} are missing from {folder} (first: {missing[0]}): "
            "restore them from the shared data"
        )
    unexpected = sorted(names - set(expected))
    if unexpected:
        raise DataError(
            f"{folder} holds {len(unexpected)} image(s) not listed in {CHECKSUM_FILE} (first: {unexpected[0]}): "
            "remove them so the set matches the benchmark"
        )
    if len(files) != image_set.file_count:
        raise DataError(
            f"set {image_set.name!r} has {len(files)} files in {folder} but should have {image_set.file_count}: "
            "restore the folder from the shared data"
        )


def _verify_hashes(image_set: ImageSet, files: list[Path], expected: dict[str, str]) -> None:
    for path in files:
        if _sha256_file(path) != expected[path.name]:
            raise DataError(f"{path} fails its checksum (corrupt or modified copy): restore it from the shared data")
    set_digest = hashlib.sha256("".join(f"{digest}\n" for digest in sorted(expected.values())).encode()).hexdigest()
    if set_digest != image_set.digest:
        raise DataError(
            f"the checksums of set {image_set.name!r} do not match its registered digest: "
            "the folder is not the benchmark version of this set; restore it from the shared data"
        )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_marker(marker: Path) -> object:
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def _write_marker(marker: Path, record: dict) -> None:
    """Write atomically; a read-only cache only costs re-hashing next time, so failures are not errors."""
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(marker, json.dumps(record))
    except OSError:
        return
