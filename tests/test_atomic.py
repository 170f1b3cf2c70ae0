import json
from pathlib import Path

import pytest

from converge.atomic import write_json_and_markdown


def test_json_and_markdown_are_written_side_by_side(tmp_path: Path) -> None:
    stem = tmp_path / "new" / "tune_pnp-drunet-color"
    data, markdown = write_json_and_markdown(stem, {"rows": [1.5]}, "# table\n")
    assert (data.name, markdown.name) == ("tune_pnp-drunet-color.json", "tune_pnp-drunet-color.md")
    assert json.loads(data.read_text()) == {"rows": [1.5]} and markdown.read_text() == "# table\n"
    assert sorted(path.name for path in stem.parent.iterdir()) == [data.name, markdown.name]


def test_a_payload_that_cannot_be_written_leaves_the_earlier_files(tmp_path: Path) -> None:
    stem = tmp_path / "report"
    write_json_and_markdown(stem, {"rows": []}, "old\n")
    with pytest.raises(TypeError):
        write_json_and_markdown(stem, {"rows": object()}, "new\n")
    assert (tmp_path / "report.md").read_text() == "old\n" and json.loads((tmp_path / "report.json").read_text())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.json", "report.md"]
