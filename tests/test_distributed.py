import subprocess
import sys
from pathlib import Path

import pytest

from converge import distributed
from converge.distributed import Workers
from converge.errors import ConfigError


@pytest.fixture
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_one_process_without_torchrun(no_torchrun) -> None:
    place = distributed.workers()
    assert place == Workers(0, 1, 0) and place.is_main and not place.parallel
    assert place.share([1, 2, 3]) == [1, 2, 3]
    assert distributed.mean_of(2.5) == 2.5 and distributed.any_of(True) and not distributed.any_of(False)
    assert distributed.gathered({"a": 1}) == [{"a": 1}]
    distributed.wait_for_all()


def test_the_place_torchrun_gives_and_its_share(no_torchrun) -> None:
    no_torchrun.setenv("RANK", "2")
    no_torchrun.setenv("WORLD_SIZE", "3")
    no_torchrun.setenv("LOCAL_RANK", "0")
    place = distributed.workers()
    assert place == Workers(2, 3, 0) and place.parallel and not place.is_main
    assert place.share(list("abcdefg")) == ["c", "f"]
    shares = [Workers(rank, 3).share(list(range(8))) for rank in range(3)]
    assert sorted(sum(shares, [])) == list(range(8))


@pytest.mark.parametrize(("rank", "world_size"), [("x", "2"), ("2", "2"), ("0", "0")])
def test_a_place_that_does_not_fit_is_refused(no_torchrun, rank: str, world_size: str) -> None:
    no_torchrun.setenv("RANK", rank)
    no_torchrun.setenv("WORLD_SIZE", world_size)
    with pytest.raises(ConfigError, match="torchrun"):
        distributed.workers()


MEETINGS = """
import sys, time
from pathlib import Path
import torch
from converge import distributed

place = distributed.join(torch.device("cpu"))
folder = Path(sys.argv[1])
for meeting in range(3):
    if place.rank == 1:
        time.sleep(0.5)
        (folder / f"{meeting}").write_text("here")
    distributed.wait_for_all()
    # Rank 1 wrote its file before it arrived, so no process leaves a meeting early.
    assert (folder / f"{meeting}").exists(), (place.rank, meeting)
distributed.leave()
"""


def test_processes_leave_a_meeting_only_when_all_arrived(tmp_path: Path) -> None:
    script = tmp_path / "meetings.py"
    script.write_text(MEETINGS)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    finished = subprocess.run([*command, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["0", "1", "2", "meetings.py"]
