"""Restorers and the string-keyed table a config uses to build them (``model: {name: dncnn, params: ...}``).

Each model class carries a ``config_class`` (a frozen dataclass of its hyper-parameters) and is built
as ``cls(config_class(**params))``. The table holds import paths, so naming a model imports only its file.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

from converge.errors import ConfigError
from converge.models.base import RestoreInfo, Restorer

MODELS: dict[str, str] = {
    "dncnn": "converge.models.backbones:DnCNN",
    "nerd": "converge.models.nerd:NERD",
    "durr": "converge.models.durr:DURR",
    "groupsc": "converge.models.groupsc:GroupSC",
    "unet": "converge.models.unet:UNetDenoiser",
}


def model_class(name: str) -> type[Restorer]:
    """The class registered under ``name``; unknown names raise :class:`ConfigError`."""
    try:
        module_name, class_name = MODELS[name].split(":")
    except KeyError:
        raise ConfigError(f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))}") from None
    return getattr(importlib.import_module(module_name), class_name)


def model_name(model: Restorer) -> str:
    """The table name of ``model``'s class (the inverse of :func:`model_class`)."""
    path = f"{type(model).__module__}:{type(model).__name__}"
    for name, registered in MODELS.items():
        if registered == path:
            return name
    raise ConfigError(f"model class {path} is not registered in converge.models.MODELS")


def build_model(name: str, params: Mapping[str, Any] | None = None) -> Restorer:
    """Instantiate model ``name`` with hyper-parameters ``params``; unknown keys raise :class:`ConfigError`."""
    cls = model_class(name)
    params = dict(params or {})
    valid = [field.name for field in dataclasses.fields(cls.config_class)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for model {name!r}: valid are {', '.join(valid)}")
    return cls(cls.config_class(**params))


def model_params(model: Restorer) -> dict[str, Any]:
    """``model``'s hyper-parameters as a plain dict (what :func:`build_model` takes back; tuples as lists)."""
    return _plain(dataclasses.asdict(model.config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


__all__ = ["MODELS", "RestoreInfo", "Restorer", "build_model", "model_class", "model_name", "model_params"]
