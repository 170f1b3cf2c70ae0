"""Restorers and how a config builds them (``model: {name: dncnn, params: ...}``).

Each model class registers itself under a name (:func:`~converge.models.registry.register_model`)
and carries a ``config_class`` (a frozen dataclass of its hyper-parameters); it is built as
``cls(config_class(**params))``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from converge.errors import ConfigError
from converge.models.base import RestoreInfo, Restorer
from converge.models.registry import model_class, register_model, registered_models
from converge.plain import plain_data


def model_name(model: Restorer) -> str:
    """The registered name of ``model``'s class (the inverse of :func:`model_class`)."""
    name = getattr(type(model), "registry_name", None)
    if name is None or registered_models().get(name) is not type(model):
        raise ConfigError(f"model class {type(model).__qualname__} is not registered: decorate it with @register_model")
    return name


def build_model(name: str, params: Mapping[str, Any] | None = None) -> Restorer:
    """Instantiate model ``name`` with hyper-parameters ``params``; unknown keys raise :class:`ConfigError`."""
    cls = model_class(name)
    params = dict(params or {})
    valid = [field.name for field in dataclasses.fields(cls.config_class)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for model {name!r}: valid are {', '.join(valid)}")
    return cls(cls.config_class(**params))


def saved_params(cls: type[Restorer], params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters read from saved weights, less the ones ``cls`` has retired (:attr:`Restorer.retired_params`)."""
    return {key: value for key, value in params.items() if key not in cls.retired_params}


def model_params(model: Restorer) -> dict[str, Any]:
    """``model``'s hyper-parameters as a plain dict (what :func:`build_model` takes back; tuples as lists)."""
    return plain_data(dataclasses.asdict(model.config))


__all__ = [
    "RestoreInfo",
    "Restorer",
    "build_model",
    "model_class",
    "model_name",
    "model_params",
    "register_model",
    "registered_models",
    "saved_params",
]
