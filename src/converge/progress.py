"""Progress inside one restoration: the iterations and tiles a restorer reports while it runs.

Loops call :func:`report` at each step (an algorithm's or a DEQ solver's iteration, a tile of a large
image); whoever wants to follow them (the command line's progress bar, the HTML report's PSNR per
iteration) runs the restoration inside :func:`observe`. Without an observer a report costs one
context-variable lookup, so training loops call it too.

>>> seen = []
>>> with observe(seen.append):
...     report("iteration", 1, 8)
>>> seen
[Step(kind='iteration', done=1, total=8, image=None)]
>>> report("iteration", 2, 8)  # nobody observes: nothing happens
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Step:
    """One finished step: ``kind`` ``"iteration"`` or ``"tile"``, ``done`` of ``total`` (``None``: up
    to a cap not known in advance) and, for an algorithm that iterates on the image, its estimate
    ``image`` ``(B, C, H, W)`` (not to be modified)."""

    kind: str
    done: int
    total: int | None
    image: Tensor | None = None


_OBSERVER: ContextVar[Callable[[Step], None] | None] = ContextVar("converge_progress_observer", default=None)


def report(kind: str, done: int, total: int | None, image: Tensor | None = None) -> None:
    """Tell the observer, if there is one, that step ``done`` of ``total`` of ``kind`` is finished."""
    observer = _OBSERVER.get()
    if observer is not None:
        observer(Step(kind, done, total, image))


@contextmanager
def observe(observer: Callable[[Step], None]) -> Iterator[None]:
    """Within the block, every :func:`report` calls ``observer`` with its :class:`Step` (an outer
    observer is set aside and comes back after the block)."""
    token = _OBSERVER.set(observer)
    try:
        yield
    finally:
        _OBSERVER.reset(token)
