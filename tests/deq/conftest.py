"""The DEQ tests run on tiny problems: one intra-op thread is faster and does not spin-wait
against other jobs sharing the cores."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
