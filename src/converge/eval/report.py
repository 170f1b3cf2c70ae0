"""Benchmark reports: per-image and mean PSNR/SSIM as Markdown and JSON, written atomically."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from converge.atomic import write_text_atomic


@dataclass(frozen=True)
class ImageScore:
    """Scores of one restored image (PSNR in dB, SSIM in [0, 1], wall seconds of the restorer)."""

    image: str
    psnr: float
    ssim: float
    input_psnr: float
    seconds: float
    iterations: float | None = None


@dataclass
class BenchmarkReport:
    """The outcome of one ``converge eval`` run: what was run, on what, and the per-image scores."""

    model: str
    bench: str
    task: str
    task_params: dict
    protocol: dict
    rows: list[ImageScore] = field(default_factory=list)

    def mean(self, key: str) -> float:
        """Mean of one score column over the images (NaN when empty)."""
        values = [getattr(row, key) for row in self.rows if getattr(row, key) is not None]
        return sum(values) / len(values) if values else float("nan")

    def summary(self) -> dict:
        """The mean scores, as written to JSON and printed by the CLI."""
        return {
            "images": len(self.rows),
            "psnr": self.mean("psnr"),
            "ssim": self.mean("ssim"),
            "input_psnr": self.mean("input_psnr"),
            "seconds": self.mean("seconds"),
        }

    def to_json(self) -> str:
        payload = {
            "model": self.model,
            "bench": self.bench,
            "task": self.task,
            "task_params": self.task_params,
            "protocol": self.protocol,
            "summary": self.summary(),
            "images": [asdict(row) for row in self.rows],
        }
        return json.dumps(payload, indent=2, sort_keys=False)

    def to_markdown(self) -> str:
        params = ", ".join(f"{key}={value}" for key, value in self.task_params.items())
        lines = [
            f"# {self.model} on {self.bench}: {self.task} ({params})",
            "",
            f"Command: `{self.protocol.get('command', '')}`",
            "",
            "| image | input PSNR | PSNR | SSIM | seconds |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in self.rows:
            lines.append(
                f"| {row.image} | {row.input_psnr:.2f} | {row.psnr:.2f} | {row.ssim:.4f} | {row.seconds:.2f} |"
            )
        mean = self.summary()
        lines.append(
            f"| **mean** | {mean['input_psnr']:.2f} | **{mean['psnr']:.2f}** | **{mean['ssim']:.4f}** "
            f"| {mean['seconds']:.2f} |"
        )
        return "\n".join(lines) + "\n"

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.md`` and ``stem.json`` into ``folder`` (created), each atomically."""
        folder.mkdir(parents=True, exist_ok=True)
        markdown = write_text_atomic(folder / f"{stem}.md", self.to_markdown())
        payload = write_text_atomic(folder / f"{stem}.json", self.to_json())
        return markdown, payload
