"""Shipped weights: the zoo read from their manifests, and safe loading.

Weights are ``safetensors`` files (plain tensors, never unpickled) next to a YAML manifest that says
how to build the model (``model: dncnn``, ``params: {...}``), what it was trained for (``task``,
``task_params``, ``sigma_range``) and, in its ``zoo`` section, the entry's name, description and
measured score (with the ``converge eval`` command and report that measured it) and the SHA-256 of
the weights, checked at every load. :data:`ZOO` holds one entry per manifest with a ``zoo`` section:
shipping a model is adding its two files. The safetensors header repeats the model name and
parameters, so a weights file paired with the wrong config is caught before any tensor is loaded,
and a file holding NaN or infinite values is refused. Shipped files live in
``converge/weights/`` and are found with :mod:`importlib.resources`, so an installed package works.

Example::

    >>> import torch
    >>> model = load_model()  # the default denoiser
    >>> noisy = torch.rand(1, 1, 32, 32)  # (B, C, H, W) in [0, 1]
    >>> x_hat, info = model.restore(noisy)
    >>> x_hat.shape, info.iterations
    (torch.Size([1, 1, 32, 32]), 1)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from converge.atomic import write_atomic, write_text_atomic
from converge.errors import ConfigError, WeightsError
from converge.models import Restorer, build_model, model_class, model_name, model_params, saved_params


@dataclass(frozen=True)
class Score:
    """What a shipped model measured on its standard benchmark: the set, the setting (level, blind),
    the mean PSNR (dB) and the ``converge eval`` command whose report (``report``, in the repository's
    ``benchmarks/results``) holds it."""

    bench: str
    setting: str
    psnr: float
    command: str
    report: str

    def summary(self) -> str:
        """``"28.75 dB on BSD68 at sigma 25"``."""
        from converge.data.registry import get_set

        return f"{self.psnr:.2f} dB on {get_set(self.bench).folder} at {self.setting}"


@dataclass(frozen=True)
class Validation:
    """A shipped model's score on the validation split at one setting, what ``converge restore``
    chooses by when no model is named (``benchmarks/validation_scores.py``): the ``task``, the image
    ``channels``, the ``level`` (noise sigma in 8-bit levels, JPEG quality, or ``None``), the mean PSNR
    (dB) over ``images`` images, and the ``converge eval`` command whose ``report`` holds it."""

    task: str
    channels: int
    level: float | None
    psnr: float
    images: int
    command: str
    report: str

    def setting(self) -> str:
        """``"denoise at sigma 25, grey"``, ``"deblock at quality 10, grey"``, ``"demosaic, colour"``."""
        kind = "quality" if self.task == "deblock" else "sigma"
        level = "" if self.level is None else f" at {kind} {self.level:g}"
        return f"{self.task}{level}, {'colour' if self.channels == 3 else 'grey'}"


@dataclass(frozen=True)
class ZooEntry:
    """One shipped model, read from the ``zoo`` section of its weights manifest (``weights/*.yaml``).

    ``model``: its registry name in ``converge.models``; ``config_file`` and ``weights_file`` inside
    ``converge/weights/``; the task and noise level (8-bit levels) it was trained for (the manifest's
    ``task`` and ``task_params``); a one-line ``description``; for JPEG deblocking the quality it was
    trained for (``None``: trained on a range of levels, or not a deblocking model); the image
    ``channels`` it restores (1 grey, 3 RGB, from its parameters); for a blind entry (no level) the
    range of noise levels it was trained on (``sigma_range``), if any; its measured ``score``; the
    SHA-256 of its weights file, checked whenever the entry is loaded; its peak memory per pixel at
    inference in bytes (``memory_bytes_per_pixel``, ``benchmarks/memory_per_pixel.py``), which automatic
    tiling plans with; its scores on the validation split (``validation``) and its inference time
    (``seconds_per_megapixel``, one thread, ``benchmarks/inference_speed.py``), which the automatic
    choice of a model (:mod:`converge.choice`) compares; whether bfloat16 was measured to cost it at
    most 0.02 dB (``bf16_inference``, the same benchmark), which ``precision="auto"`` uses. A prior
    trained for many tasks (MTDEQ: ``task`` None) names the plug-and-play algorithm it restores through
    (``algorithm``, the manifest's ``restores_with``): ``--model NAME`` is that algorithm with
    ``--prior NAME``."""

    name: str
    model: str
    config_file: str
    weights_file: str
    task: str | None
    sigma: float | None
    description: str
    quality: int | None = None
    channels: int = 1
    trained_range: tuple[float, float] | None = None
    score: Score | None = None
    sha256: str | None = None
    memory_per_pixel: float | None = None
    validation: tuple[Validation, ...] = ()
    seconds_per_megapixel: float | None = None
    bf16_inference: bool = False
    algorithm: str | None = None

    def level(self) -> float | None:
        """The degradation level the entry was trained for: its JPEG quality for deblocking, else its sigma."""
        return self.quality if self.task == "deblock" else self.sigma

    def distance(self, wanted: float) -> float:
        """How far level ``wanted`` is from what the entry was trained for: from its level, or from its
        trained range (0 inside it); infinite for a blind entry without a range."""
        level = self.level()
        if level is not None:
            return abs(level - wanted)
        if self.trained_range is None:
            return float("inf")
        low, high = self.trained_range
        return max(low - wanted, 0.0, wanted - high)

    @property
    def model_class(self) -> type[Restorer]:
        """The :class:`Restorer` subclass these weights build."""
        return model_class(self.model)


def entry_from_manifest(config_file: str, spec: Mapping[str, Any]) -> ZooEntry:
    """The zoo entry that the weights manifest ``spec`` (the parsed ``config_file``) describes in its
    ``zoo`` section (``name``, ``description``, ``sha256`` of the weights, ``score``); the rest comes
    from the manifest itself.
    A section that is incomplete raises :class:`WeightsError`."""
    section = spec["zoo"]
    try:
        params, task_params = spec.get("params", {}), spec.get("task_params") or {}
        task = spec["task"]
        score = Score(**section["score"]) if "score" in section else None
        sigma_range = spec.get("sigma_range")
        return ZooEntry(
            name=section["name"],
            model=spec["model"],
            config_file=config_file,
            weights_file=config_file.removesuffix(".yaml") + ".safetensors",
            task=task,
            sigma=float(task_params["sigma"]) if task == "denoise" and "sigma" in task_params else None,
            description=section["description"] + ("" if score is None else f"; {score.summary()}"),
            quality=int(task_params["quality"]) if task == "deblock" and "quality" in task_params else None,
            channels=int(params.get("channels", 1)),
            trained_range=None if sigma_range is None else (float(sigma_range[0]), float(sigma_range[1])),
            score=score,
            sha256=str(section["sha256"]),
            memory_per_pixel=_optional_float(section, "memory_bytes_per_pixel"),
            validation=tuple(Validation(**record) for record in section.get("validation", ())),
            seconds_per_megapixel=_optional_float(section, "seconds_per_megapixel"),
            bf16_inference=bool(section.get("bf16_inference", False)),
            algorithm=section.get("restores_with"),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsError(f"the zoo section of {config_file} is incomplete ({error}): fix the manifest") from None


def _optional_float(section: Mapping[str, Any], key: str) -> float | None:
    return float(section[key]) if key in section else None


def _read_zoo() -> dict[str, ZooEntry]:
    """Every shipped model: one entry per manifest in ``converge/weights/`` that has a ``zoo`` section."""
    entries: dict[str, ZooEntry] = {}
    for path in sorted((resources.files("converge") / "weights").iterdir(), key=lambda item: item.name):
        if not path.name.endswith(".yaml"):
            continue
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(spec, dict) or "zoo" not in spec:
            continue
        entry = entry_from_manifest(path.name, spec)
        if entry.name in entries:
            raise WeightsError(f"two weights manifests name zoo entry {entry.name!r}: rename one")
        entries[entry.name] = entry
    return entries


ZOO: dict[str, ZooEntry] = _read_zoo()
DEFAULT_MODEL = "dncnn-s25"


def list_models() -> list[ZooEntry]:
    """Every shipped model, sorted by name."""
    return [ZOO[name] for name in sorted(ZOO)]


def get_entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``; unknown names raise :class:`ConfigError`."""
    try:
        return ZOO[name]
    except KeyError:
        raise ConfigError(f"unknown zoo model {name!r}: choose one of {', '.join(sorted(ZOO))}") from None


def resolve_entry(
    name: str,
    task: str,
    sigma: float | None = None,
    quality: int | None = None,
    *,
    channels: int | None = None,
    blind: bool = False,
) -> ZooEntry:
    """The zoo entry that ``name`` means for ``task`` at noise level ``sigma`` (8-bit levels) or, for
    ``deblock``, at JPEG ``quality``, for images of ``channels`` channels.

    ``name`` is a zoo name (``nerd-s25``: that entry) or a model family (``nerd``: among the family's
    entries for ``task``, those for ``channels`` when it has any (a grey deblocker also restores the
    luma of a colour JPEG), then a blind one when no level is given or ``blind`` (the level was
    estimated, not given), else the one trained nearest to that level (a blind entry's
    ``trained_range`` counts as trained at every level in it; on a tie the entry for one level wins),
    a blind one when none was trained for a level). Raises :class:`ConfigError` when nothing fits.
    """
    if name in ZOO:
        return ZOO[name]
    candidates = _family_entries(name, task, channels)
    wanted, option = (quality, "--quality") if task == "deblock" else (sigma, "--sigma")
    blind_entries = [entry for entry in candidates if entry.level() is None]
    levels = sorted((entry for entry in candidates if entry.level() is not None), key=ZooEntry.level)
    if blind_entries and (blind or wanted is None or not levels):
        return min(blind_entries, key=lambda entry: entry.name)
    if wanted is None:
        trained = ", ".join(f"{entry.level():g}" for entry in levels)
        raise ConfigError(f"model family {name!r} has one model per level ({trained}): give {option}")
    ranged = [entry for entry in blind_entries if entry.trained_range is not None]
    return min(
        levels + ranged,
        key=lambda entry: (entry.distance(wanted), entry.level() is None, entry.level() or 0.0, entry.name),
    )


def needs_level(name: str, task: str, channels: int | None = None) -> bool:
    """Whether :func:`resolve_entry` needs a level to resolve ``name`` for ``task``: a model family
    with no blind entry for it (so a blind caller has to estimate the noise level first)."""
    if name in ZOO:
        return False
    return all(entry.level() is not None for entry in _family_entries(name, task, channels))


def _family_entries(name: str, task: str, channels: int | None) -> list[ZooEntry]:
    """The entries of model family ``name`` for ``task``, those for ``channels`` when there are any."""
    family = [entry for entry in ZOO.values() if entry.model == name]
    if not family:
        raise ConfigError(f"unknown zoo model {name!r}: choose one of {', '.join(sorted(zoo_names()))}")
    for_task = [entry for entry in family if entry.task == task]
    if not for_task:
        tasks = ", ".join(sorted({entry.task for entry in family}))
        raise ConfigError(f"model family {name!r} has weights for task(s) {tasks}, not {task!r}")
    for_channels = [entry for entry in for_task if entry.channels == channels]
    return for_channels or for_task


def zoo_names() -> list[str]:
    """Every name :func:`resolve_entry` accepts: the zoo's entries and their model families."""
    return sorted(set(ZOO) | {entry.model for entry in ZOO.values()})


def weights_path(name: str) -> Path:
    """Where the safetensors file of shipped model ``name`` lives (it may be missing)."""
    return _package_file(get_entry(name).weights_file)


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device = "cpu") -> Restorer:
    """Build shipped model ``name`` and load its weights, in eval mode on ``device``.

    Raises :class:`WeightsError` if a file is missing, differs from the digest in its manifest, or
    the weights do not fit the config.
    """
    entry = get_entry(name)
    weights = _package_file(entry.weights_file)
    if weights.is_file() and _sha256(weights) != entry.sha256:
        raise WeightsError(
            f"{weights} does not match the SHA-256 in {entry.config_file} (altered or corrupt): reinstall the package"
        )
    model = load_weights(weights, _package_file(entry.config_file), device=device)
    if model_name(model) != entry.model:
        raise WeightsError(
            f"{entry.config_file} builds a {model_name(model)!r} model but zoo entry {name!r} expects {entry.model!r}: "
            "reinstall the package"
        )
    channels = model.channels
    if channels != entry.channels:
        raise WeightsError(
            f"{entry.config_file} builds a {channels}-channel model but zoo entry {name!r} says {entry.channels}: "
            "reinstall the package"
        )
    return model


def load_weights(
    weights: str | Path, config: str | Path | None = None, device: str | torch.device = "cpu"
) -> Restorer:
    """Build a model from a YAML config (default: ``weights`` with suffix ``.yaml``) and load a
    safetensors file into it, in eval mode on ``device``. Never unpickles.

    Raises :class:`WeightsError` for a missing or corrupt file, a config that builds no model, or
    tensors (names, shapes) or header metadata that do not match the config.
    """
    weights = Path(weights)
    config = weights.with_suffix(".yaml") if config is None else Path(config)
    spec = read_weights_config(config)
    try:
        model = build_model(spec["model"], saved_params(model_class(spec["model"]), spec.get("params", {})))
    except (ConfigError, TypeError) as error:
        raise WeightsError(f"{config} does not describe a buildable model ({error}): fix or replace the file") from None
    if not weights.is_file():
        raise WeightsError(f"weights file {weights} is missing: reinstall the package or retrain the model")
    load_tensors(model, weights, str(config), "pair each weights file with its own config")
    return model.to(device).eval()


def load_tensors(model: Restorer, weights: Path, described_by: str, remedy: str) -> None:
    """Load the safetensors file ``weights`` into ``model`` in place, strictly (every tensor, no
    extra), once its header names ``model``'s registry name and parameters exactly. A parameter the
    header lacks counts as its default (it was added to the model after the file was saved).

    Raises :class:`WeightsError` for an unreadable file, non-finite values, a header for another model
    or tensors that do not fit; the messages name ``described_by`` (what built ``model``) and end with ``remedy``.
    """
    metadata, tensors = read_safetensors(weights)
    broken = sorted(
        name for name, tensor in tensors.items() if tensor.is_floating_point() and not tensor.isfinite().all()
    )
    if broken:
        raise WeightsError(f"{weights} holds NaN or infinite values (in {broken[0]}): the weights are unusable")
    expected = weights_header(model)
    found = {"model": metadata.get("model"), "params": metadata.get("params")}
    if not _describes(found, model):
        raise WeightsError(
            f"{weights} was saved for {found['model']} {found['params']} but {described_by} asks for "
            f"{expected['model']} {expected['params']}: {remedy}"
        )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first_line = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise WeightsError(f"{weights} does not fit the model of {described_by} ({first_line}): {remedy}") from None


def read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The header metadata and tensors of the safetensors file at ``path`` (never unpickles).

    Raises :class:`WeightsError` when the file cannot be read as safetensors.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return handle.metadata() or {}, {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise WeightsError(f"{path} is not a readable safetensors file ({error}): replace it") from None


def read_weights_config(path: str | Path) -> dict[str, Any]:
    """The YAML config next to a weights file, as a dict with at least ``model`` and ``params``."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError:
        raise WeightsError(f"weights config {path} is missing: reinstall the package or re-export the model") from None
    except yaml.YAMLError:
        raise WeightsError(f"weights config {path} is not valid YAML: replace it") from None
    if not (isinstance(spec, dict) and isinstance(spec.get("model"), str) and isinstance(spec.get("params", {}), dict)):
        raise WeightsError(f"weights config {path} needs a 'model' name and a 'params' mapping: replace it")
    return spec


def save_weights(model: Restorer, config: Mapping[str, Any] | None, path: str | Path) -> Path:
    """Write ``model``'s tensors to ``path`` (safetensors) and its YAML config beside it, both atomically.

    The YAML holds ``model`` and ``params`` (what rebuilds the model) followed by the fields of
    ``config`` (task, task parameters, provenance). Returns ``path``.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"weights must be saved to a .safetensors file, got {path.name}")
    extra = dict(config or {})
    reserved = sorted({"model", "params"} & set(extra))
    if reserved:
        raise ConfigError(f"config may not set {', '.join(reserved)}: they are taken from the model")
    name, params = model_name(model), model_params(model)
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    payload = save(tensors, metadata=weights_header(model))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda stream: stream.write(payload))
    spec = yaml.safe_dump({"model": name, "params": params, **extra}, sort_keys=False)
    write_text_atomic(path.with_suffix(".yaml"), spec)
    return path


def weights_header(model: Restorer) -> dict[str, str]:
    """The safetensors header that names ``model``: its registry name and canonical JSON parameters."""
    return {"model": model_name(model), "params": _canonical(model_params(model))}


def _describes(header: Mapping[str, Any], model: Restorer) -> bool:
    """Whether a safetensors ``header`` (``model`` name, JSON ``params``) names ``model``, the
    parameters it lacks taking their defaults."""
    if header["model"] != model_name(model) or not isinstance(header["params"], str):
        return False
    try:
        params = json.loads(header["params"])
        return isinstance(params, dict) and type(model.config)(**saved_params(type(model), params)) == model.config
    except (ValueError, TypeError, ConfigError):
        return False


def _canonical(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True)


def manifest(name: str) -> dict[str, Any]:
    """The weights manifest (YAML) of zoo entry ``name``, as a dict."""
    return read_weights_config(_package_file(get_entry(name).config_file))


def trained_degradation(name: str, blind_sigma: float = 25.0, blind_quality: int = 20) -> tuple[str, dict[str, Any]]:
    """The task and task options zoo entry ``name`` was trained for (its manifest's ``task_params``),
    for ``make_task``. An entry trained on a range of levels is given ``blind_sigma`` (8-bit levels) or
    ``blind_quality``; an entry for many tasks (MTDEQ) deblurring with the task's default blur."""
    entry = get_entry(name)
    params = dict(manifest(name).get("task_params") or {})
    if entry.task == "denoise":
        params.setdefault("sigma", blind_sigma)
    elif entry.task == "deblock":
        params.setdefault("quality", blind_quality)
    return entry.task or "deblur", params


def parameter_count(name: str) -> int:
    """How many numbers the weights of zoo entry ``name`` hold (read from the file's header, no tensor loaded)."""
    from safetensors import safe_open

    with safe_open(str(weights_path(name)), framework="pt", device="cpu") as handle:
        return sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())


def card(name: str) -> str:
    """The section of the weights card (``converge/weights/README.md``) that describes zoo entry or
    family ``name``: how it was trained and what it measured; :class:`ConfigError` when none does."""
    text = _package_file("README.md").read_text(encoding="utf-8")
    sections = ["## " + part for part in text.split("\n## ")[1:]]
    # A heading names an entry, or it after a sibling ("groupsc-deblock-q10, -q20"), or a family's entry.
    stem = re.sub(r"\d+$", "", name)
    patterns = [
        rf"(?<![\w-]){re.escape(name)}(?![\w-])",
        rf"(?<![\w-]){re.escape(stem)}\d",
        rf"(?<![\w-]){re.escape(name)}-",  # a family: the first of its entries
    ]
    for pattern in patterns:
        for section in sections:
            if re.search(pattern, section.splitlines()[0]):
                return section.rstrip() + "\n" + _choice_facts(name)
    raise ConfigError(f"no card names {name!r}: `converge zoo` lists the shipped models")


def _choice_facts(name: str) -> str:
    """What ``converge restore`` chooses entry ``name`` by, when it has been measured: its speed and
    its validation scores, each with the command behind it; empty otherwise."""
    entry = ZOO.get(name)
    if entry is None or (not entry.validation and entry.seconds_per_megapixel is None):
        return ""
    lines = ["", f"### What `converge restore` chooses {name} by", ""]
    if entry.seconds_per_megapixel is not None:
        speed = f"{entry.seconds_per_megapixel:.2f} s per megapixel on one thread"
        lines.append(f"- {speed} (`python benchmarks/inference_speed.py --record`)")
    for record in entry.validation:
        lines.append(
            f"- {record.setting()}: {record.psnr:.2f} dB on {record.images} validation images (`{record.command}`)"
        )
    return "\n".join(lines) + "\n"


def record_measurements(
    name: str,
    *,
    seconds_per_megapixel: float | None = None,
    bf16_inference: bool | None = None,
    validation: list[Mapping[str, Any]] | None = None,
) -> None:
    """Write what the benchmarks measure for zoo entry ``name`` into its manifest: its one-thread
    ``seconds_per_megapixel`` (rounded to 0.01) and ``bf16_inference`` (bfloat16 costs it at most
    0.02 dB), from ``benchmarks/inference_speed.py``, and its ``validation`` records (mappings with the
    fields of :class:`Validation`), from ``benchmarks/validation_scores.py``. They end the ``zoo``
    section, the manifest's last, in that order; an argument left ``None`` keeps what the manifest
    holds, ``validation=[]`` removes the records. The rest of the text stays as it is."""
    path = _package_file(get_entry(name).config_file)
    text = path.read_text(encoding="utf-8")
    section = yaml.safe_load(text)["zoo"]
    speed = section.get("seconds_per_megapixel") if seconds_per_megapixel is None else seconds_per_megapixel
    bf16 = section.get("bf16_inference") if bf16_inference is None else bf16_inference
    records = section.get("validation", []) if validation is None else list(validation)
    lines = text.splitlines()
    keys = ("  seconds_per_megapixel:", "  bf16_inference:", "  validation:")
    ends = [index for index, line in enumerate(lines) if line.startswith(keys)]
    lines = lines[: ends[0]] if ends else lines
    if speed is not None:
        lines.append(f"  seconds_per_megapixel: {speed:.2f}")
    if bf16 is not None:
        lines.append(f"  bf16_inference: {'true' if bf16 else 'false'}")
    if records:
        block = yaml.safe_dump({"validation": [dict(record) for record in records]}, sort_keys=False, width=200)
        lines += ["  " + line for line in block.splitlines()]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _package_file(name: str) -> Path:
    """A file of ``converge/weights/`` as a filesystem path (the package is installed unzipped)."""
    return Path(str(resources.files("converge") / "weights" / name))
