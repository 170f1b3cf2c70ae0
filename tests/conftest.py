"""Test-wide set-up: a private cache for checksum-verification markers, and one torch thread per test."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def private_verification_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("CONVERGE_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    monkeypatch.undo()


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Test tensors are small: one intra-op thread is faster and does not spin-wait against other jobs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
