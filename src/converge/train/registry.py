"""The trainers a config can name (``trainer: dqn``): every trainer class registers itself.

A trainer class announces its kind with :func:`register_trainer`; no central table repeats it. The
supervised :class:`~converge.train.trainer.Trainer` registers ``supervised`` in its own module, which
:mod:`converge.train` imports (so it is known whenever this module is). A trainer for one model lives
in that model's package, as its ``training`` module (``converge.models.durr.training``); the first
lookup of a kind not yet known imports every such module once, so a new one is found by being there.
Kinds are unique: registering a second class under a taken kind raises :class:`ConfigError`.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from converge.errors import ConfigError

if TYPE_CHECKING:
    from converge.train.trainer import Trainer

TRAINING_MODULE = "training"
"""The module of a :mod:`converge.models` package that holds its trainers."""

_TRAINERS: dict[str, type[Trainer]] = {}
_discovered = False
TrainerClass = TypeVar("TrainerClass", bound=type)


def register_trainer(kind: str) -> Callable[[TrainerClass], TrainerClass]:
    """Class decorator: make the :class:`~converge.train.trainer.Trainer` subclass run configs with
    ``trainer: kind``, and set its ``kind``. A kind taken by another class raises :class:`ConfigError`.

    Example::

        >>> from converge.train import Trainer
        >>> @register_trainer("my-trainer")
        ... class MyTrainer(Trainer):
        ...     pass
        >>> MyTrainer.kind, trainer_class("my-trainer") is MyTrainer
        ('my-trainer', True)
    """

    def register(cls: TrainerClass) -> TrainerClass:
        taken = _TRAINERS.get(kind)
        if taken is not None and _qualified_name(taken) != _qualified_name(cls):
            raise ConfigError(f"a trainer of kind {kind!r} is already registered ({_qualified_name(taken)})")
        cls.kind = kind
        _TRAINERS[kind] = cls
        return cls

    return register


def trainer_class(kind: str) -> type[Trainer]:
    """The class registered for ``kind``; unknown kinds raise :class:`ConfigError` listing the known ones."""
    if kind not in _TRAINERS:
        _discover()
    if kind not in _TRAINERS:
        raise ConfigError(f"unknown trainer {kind!r}: choose one of {', '.join(sorted(_TRAINERS))}")
    return _TRAINERS[kind]


def trainer_kinds() -> list[str]:
    """Every registered trainer kind, sorted (after importing every model package's ``training`` module)."""
    _discover()
    return sorted(_TRAINERS)


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import converge.models as models

    for package in pkgutil.iter_modules(models.__path__):
        if not package.ispkg or package.name.startswith("_"):
            continue
        name = f"{models.__name__}.{package.name}.{TRAINING_MODULE}"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    _discovered = True
