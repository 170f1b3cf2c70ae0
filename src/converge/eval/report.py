"""Benchmark reports: per-image and mean PSNR/SSIM as Markdown and JSON, written atomically."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from converge.atomic import write_text_atomic


# Per-image values a restorer may report, with their column headers.
REPORTED = {"iterations": "iterations", "noise_level": "estimated sigma"}
# What a report says was run: two reports with the same header measure the same thing.
HEADER = ("model", "bench", "task", "task_params", "protocol")


@dataclass(frozen=True)
class ImageScore:
    """Scores of one restored image (PSNR in dB, SSIM in [0, 1], wall seconds of the restorer), with
    the loops the restorer ran (``iterations``, when it has a loop), what restored it (``model``: for
    a model family, the entry it picked) and the noise level it estimated when blind (8-bit levels)."""

    image: str
    psnr: float
    ssim: float
    input_psnr: float
    seconds: float
    iterations: float | None = None
    model: str | None = None
    noise_level: float | None = None


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
        """The mean scores, as written to JSON and printed by the CLI; the mean ``iterations`` and
        estimated ``noise_level`` too when the restorer reported them."""
        means = {
            "images": len(self.rows),
            "psnr": self.mean("psnr"),
            "ssim": self.mean("ssim"),
            "input_psnr": self.mean("input_psnr"),
            "seconds": self.mean("seconds"),
        }
        for key in REPORTED:
            if self._reported(key):
                means[key] = self.mean(key)
        return means

    def _reported(self, key: str) -> bool:
        return any(getattr(row, key) is not None for row in self.rows)

    def _picked_models(self) -> bool:
        """Whether some image was restored by something other than the model the report names (an
        entry a model family picked)."""
        return any(row.model not in (None, self.model) for row in self.rows)

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

    @classmethod
    def from_json(cls, text: str) -> BenchmarkReport:
        """The report :meth:`to_json` wrote (its summary is recomputed, not read). Raises ``ValueError``,
        ``KeyError`` or ``TypeError`` on text that is not such a report."""
        payload = json.loads(text)
        rows = [ImageScore(**row) for row in payload["images"]]
        return cls(**{name: payload[name] for name in HEADER}, rows=rows)

    def same_run(self, other: BenchmarkReport) -> bool:
        """Whether ``other`` measures the same thing: same model label, set, task, parameters and
        protocol (the command and the weights' digest included)."""
        return self._header() == other._header()

    def _header(self) -> dict:
        """What was run, as it reads back from JSON (tuples become lists)."""
        return json.loads(json.dumps({name: getattr(self, name) for name in HEADER}))

    def to_markdown(self) -> str:
        params = ", ".join(f"{key}={value}" for key, value in self.task_params.items())
        lines = [
            f"# {self.model} on {self.bench}: {self.task} ({params})",
            "",
            f"Command: `{self.protocol.get('command', '')}`",
            "",
        ]
        extra = [key for key in REPORTED if self._reported(key)]
        picked = self._picked_models()
        header = ["image", "input PSNR", "PSNR", "SSIM", "seconds", *(REPORTED[key] for key in extra)]
        header += ["model"] if picked else []
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---" + "|---:" * (len(header) - 1 - picked) + ("|---" if picked else "") + "|")
        for row in self.rows:
            cells = [row.image, f"{row.input_psnr:.2f}", f"{row.psnr:.2f}", f"{row.ssim:.4f}", f"{row.seconds:.2f}"]
            cells += [_number(getattr(row, key)) for key in extra]
            cells += [row.model or ""] if picked else []
            lines.append("| " + " | ".join(cells) + " |")
        mean = self.summary()
        cells = ["**mean**", f"{mean['input_psnr']:.2f}", f"**{mean['psnr']:.2f}**", f"**{mean['ssim']:.4f}**"]
        cells += [f"{mean['seconds']:.2f}", *(_number(mean[key]) for key in extra)]
        cells += [""] if picked else []
        lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.md`` and ``stem.json`` into ``folder`` (created), each atomically."""
        folder.mkdir(parents=True, exist_ok=True)
        markdown = write_text_atomic(folder / f"{stem}.md", self.to_markdown())
        payload = write_text_atomic(folder / f"{stem}.json", self.to_json())
        return markdown, payload


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"
