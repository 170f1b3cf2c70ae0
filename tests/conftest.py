"""Test-wide set-up: checksum-verification markers go to a private cache, not the user's."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def private_verification_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("CONVERGE_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    monkeypatch.undo()
