"""The models a config can name: every model class registers itself with :func:`register_model`.

A model module announces its class (``@register_model("dncnn")``); no central table repeats it. The
first lookup imports every module of :mod:`converge.models` once (``pkgutil``), so a new model file is
found by being there. Names are unique: registering a second class under a taken name raises.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from converge.errors import ConfigError

if TYPE_CHECKING:
    from converge.models.base import Restorer

_MODELS: dict[str, type[Restorer]] = {}
_discovered = False
ModelClass = TypeVar("ModelClass", bound=type)


def register_model(name: str) -> Callable[[ModelClass], ModelClass]:
    """Class decorator: make the :class:`~converge.models.base.Restorer` subclass buildable as ``name``.

    The class needs a ``config_class`` (a frozen dataclass of its hyper-parameters); its
    ``registry_name`` is set to ``name``. A name taken by another class raises :class:`ConfigError`.
    """

    def register(cls: ModelClass) -> ModelClass:
        taken = _MODELS.get(name)
        if taken is not None and taken.__qualname__ != cls.__qualname__:
            raise ConfigError(f"a model named {name!r} is already registered ({taken.__module__}.{taken.__qualname__})")
        if not hasattr(cls, "config_class"):
            raise ConfigError(f"model {name!r} ({cls.__qualname__}) needs a config_class dataclass")
        cls.registry_name = name
        _MODELS[name] = cls
        return cls

    return register


def registered_models() -> dict[str, type[Restorer]]:
    """Every registered model class by name (after importing every module of :mod:`converge.models`)."""
    _discover()
    return dict(sorted(_MODELS.items()))


def model_class(name: str) -> type[Restorer]:
    """The class registered under ``name``; unknown names raise :class:`ConfigError` listing the known ones."""
    models = registered_models()
    if name not in models:
        raise ConfigError(f"unknown model {name!r}: choose one of {', '.join(models)}")
    return models[name]


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    package = __name__.rpartition(".")[0]
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")
    _discovered = True
