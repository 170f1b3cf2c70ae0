"""Classical baselines: they denoise real images, respect the tensor contract and fail loudly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from converge.baselines import (
    BASELINES,
    BaselineSpec,
    ClassicalRestorer,
    Identity,
    bicubic_upsample,
    fill_missing,
    get_baseline,
    malvar_demosaic,
    register_baseline,
)
from converge.data.registry import data_root
from converge.errors import ConfigError
from converge.physics.tasks import make_task, task_names, task_parameters

DATA = data_root()
SIGMA = 25 / 255
DENOISERS = ["bm3d", "tv", "nlm"]


def load_crop(path: Path, top: int, left: int, size: int = 96) -> torch.Tensor:
    pixels = np.asarray(Image.open(path), dtype=np.float32) / 255.0
    image = torch.from_numpy(pixels[top : top + size, left : left + size].copy())
    return image[None, None] if image.ndim == 2 else image.permute(2, 0, 1)[None]


def add_noise(x: torch.Tensor, sigma: float = SIGMA, seed: int = 0) -> torch.Tensor:
    return x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))


def psnr(x: torch.Tensor, reference: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (x - reference).square().mean()))


@pytest.fixture(scope="module")
def gray_crop() -> torch.Tensor:
    return load_crop(DATA / "Set12" / "01.png", 80, 80)


@pytest.fixture(scope="module")
def colour_crop() -> torch.Tensor:
    return load_crop(DATA / "CBSD68" / "101085.png", 100, 150)


@pytest.mark.parametrize("name", DENOISERS)
def test_denoisers_improve_a_gray_crop(name, gray_crop):
    if name == "bm3d":
        pytest.importorskip("bm3d")
    noisy = add_noise(gray_crop)
    out = get_baseline(name)(noisy, sigma=SIGMA)
    assert out.shape == noisy.shape and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert psnr(out, gray_crop) > psnr(noisy, gray_crop) + 3.0


@pytest.mark.parametrize("name", DENOISERS)
def test_denoisers_improve_a_colour_crop(name, colour_crop):
    if name == "bm3d":
        pytest.importorskip("bm3d")
    noisy = add_noise(colour_crop)
    out = get_baseline(name)(noisy, sigma=SIGMA)
    assert out.shape == noisy.shape
    assert psnr(out, colour_crop) > psnr(noisy, colour_crop) + 3.0


@pytest.mark.parametrize("name", ["tv", "nlm"])
def test_batch_is_restored_image_by_image_with_its_own_sigma(name, gray_crop):
    clean = torch.cat([gray_crop, gray_crop.flip(-1)]).double()
    sigmas = torch.tensor([15 / 255, 50 / 255], dtype=torch.float64)
    noisy = torch.cat([add_noise(clean[i : i + 1], float(sigmas[i]), seed=i) for i in range(2)])
    restorer = get_baseline(name)
    batched = restorer(noisy, sigma=sigmas)
    assert batched.dtype == torch.float64
    for i in range(2):
        torch.testing.assert_close(batched[i : i + 1], restorer(noisy[i : i + 1], sigma=float(sigmas[i])))


@pytest.mark.parametrize("name", DENOISERS)
def test_missing_sigma_tells_the_user_to_pass_it(name, gray_crop):
    with pytest.raises(ConfigError, match="--sigma"):
        get_baseline(name)(gray_crop)


@pytest.mark.parametrize(
    ("sigma", "message"),
    [(25.0, r"\[0, 1\] image scale"), (0.0, "positive"), (float("nan"), "positive"), (torch.ones(3) / 10, "batch")],
)
def test_bad_sigma_is_rejected(sigma, message, gray_crop):
    with pytest.raises(ConfigError, match=message):
        get_baseline("tv")(gray_crop, sigma=sigma)


def test_missing_bm3d_package_is_a_config_error(monkeypatch, gray_crop):
    monkeypatch.setitem(sys.modules, "bm3d", None)
    with pytest.raises(ConfigError, match="pip install bm3d"):
        get_baseline("bm3d")(gray_crop, sigma=SIGMA)


def test_bm3d_rejects_unsupported_channels_and_profiles():
    with pytest.raises(ValueError, match="channels"):
        get_baseline("bm3d")(torch.rand(1, 2, 16, 16), sigma=SIGMA)
    with pytest.raises(ConfigError, match="profile"):
        get_baseline("bm3d", profile="fast")


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="bm3d, tv, nlm"):
        get_baseline("bm4d")


@pytest.mark.parametrize(("name", "options"), [("tv", {"weight": 0.1}), ("bicubic", {}), ("input", {"factor": 2})])
def test_unknown_or_missing_options_raise(name, options):
    with pytest.raises(ConfigError, match="options"):
        get_baseline(name, **options)


def test_every_registered_baseline_builds_and_has_a_description():
    for name, spec in BASELINES.items():
        options = {"factor": 2} if name == "bicubic" else {}
        if spec.needs_operator:
            options["operator"] = _image_operator(spec.tasks[0])
        assert isinstance(get_baseline(name, **options), ClassicalRestorer)
        assert spec.description.strip()


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_declares_tasks_that_exist_and_options_they_give(name):
    spec = BASELINES[name]
    assert name in (spec.name, *spec.aliases)
    assert spec.tasks and set(spec.tasks) <= set(task_names())
    for task in spec.tasks:
        assert set(spec.task_options) <= set(task_parameters(task))
    options = {option: task_parameters(spec.tasks[0])[option] for option in spec.task_options}
    if spec.needs_operator:
        options["operator"] = _image_operator(spec.tasks[0])
    assert isinstance(get_baseline(name, **options), ClassicalRestorer)


def _image_operator(task: str):
    """The operator that degraded one image under ``task`` (a blur, a drawn mask)."""
    return make_task(task).degrade(torch.rand(1, 3, 16, 16), torch.Generator().manual_seed(0))[1]


def test_identity_is_an_alias_of_input():
    assert BASELINES["identity"] is BASELINES["input"]


@pytest.mark.parametrize("name", ["tv", "identity"])
def test_a_taken_name_cannot_be_registered_again(name):
    before = dict(BASELINES)
    with pytest.raises(ConfigError, match=f"'{name}' is already registered"):
        register_baseline(BaselineSpec("fresh", Identity, "Taken.", ("denoise",), aliases=(name,)))
    with pytest.raises(ConfigError, match=f"'{name}' is already registered"):
        register_baseline(BaselineSpec(name, Identity, "Taken.", ("denoise",)))
    assert BASELINES == before


def test_a_baseline_that_restores_no_task_is_refused():
    with pytest.raises(ConfigError, match="restores no task"):
        register_baseline(BaselineSpec("idle", Identity, "Restores nothing.", ()))
    assert "idle" not in BASELINES


def test_input_baseline_returns_an_unchanged_copy():
    y = torch.rand(2, 3, 8, 9)
    out = get_baseline("input")(y, sigma=SIGMA)
    assert torch.equal(out, y) and out.data_ptr() != y.data_ptr()


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_bicubic_keeps_constants_and_scales_the_shape(factor):
    y = torch.full((2, 3, 7, 10), 0.4)
    out = bicubic_upsample(y, factor)
    assert out.shape == (2, 3, 7 * factor, 10 * factor) and out.dtype == y.dtype
    torch.testing.assert_close(out, torch.full_like(out, 0.4))


def test_bicubic_odd_factor_interpolates_the_input_samples():
    y = torch.rand(1, 1, 9, 11, dtype=torch.float64)
    torch.testing.assert_close(bicubic_upsample(y, 3)[..., 1::3, 1::3], y, rtol=0, atol=1e-12)
    torch.testing.assert_close(bicubic_upsample(y, 1), y, rtol=0, atol=1e-12)


def test_bicubic_reproduces_quadratics_away_from_the_border():
    # Keys' a = -0.5 is the one cubic kernel exact on quadratics; torch's a = -0.75 is not.
    factor = 4

    def quadratic(t):
        return 0.2 + 0.01 * t + 0.002 * t**2

    rows = quadratic(torch.arange(20, dtype=torch.float64))
    y = rows[:, None].expand(20, 6)[None, None]
    position = (torch.arange(20 * factor, dtype=torch.float64) + 0.5) / factor - 0.5
    interior = slice(2 * factor, -2 * factor)
    out = bicubic_upsample(y, factor)[0, 0, interior, 0]
    torch.testing.assert_close(out, quadratic(position[interior]), rtol=0, atol=1e-12)


def test_bicubic_mirrors_the_border_like_matlab():
    y = torch.full((1, 1, 1, 6), 0.5, dtype=torch.float64)
    y[..., 1] = 1.0
    # Output 0 sits at u = -0.375; of its taps -2, -1, 0, 1 (mirrored to 1, 0, 0, 1) two read the 1.0.
    t = torch.tensor([1.625, 1.375], dtype=torch.float64)
    expected = 0.5 + 0.5 * (((-0.5 * t + 2.5) * t - 4.0) * t + 2.0).sum()
    assert float(bicubic_upsample(y, 4)[0, 0, 0, 0]) == pytest.approx(float(expected), abs=1e-12)


def test_bicubic_output_is_clipped_and_validated():
    step = torch.zeros(1, 1, 4, 8)
    step[..., 4:] = 1.0
    out = get_baseline("bicubic", factor=2)(step)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    for factor in (0, -2, 2.5, "2"):
        with pytest.raises(ConfigError, match="positive integer"):
            bicubic_upsample(step, factor)


def test_importing_baselines_stays_light():
    code = "import sys, converge.baselines; print(sorted(m for m in ('skimage', 'bm3d', 'scipy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _mosaic_of(rgb: torch.Tensor, pattern: str) -> torch.Tensor:
    from converge.physics.mosaic import BayerMosaic

    return BayerMosaic(pattern)(rgb)


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_malvar_keeps_measurements_and_constant_colours(pattern):
    from converge.physics.mosaic import BayerMosaic

    constant = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64).reshape(1, 3, 1, 1).expand(2, 3, 9, 11)
    torch.testing.assert_close(malvar_demosaic(_mosaic_of(constant, pattern), pattern), constant, rtol=0, atol=1e-12)
    rgb = torch.rand(2, 3, 8, 10, dtype=torch.float64)
    mosaic = BayerMosaic(pattern)
    measured = mosaic.channel_mask(8, 10, torch.float64, rgb.device)
    restored = malvar_demosaic(mosaic(rgb), pattern)
    torch.testing.assert_close(restored * measured, rgb * measured, rtol=0, atol=1e-12)
    torch.testing.assert_close(malvar_demosaic(mosaic.to_raw(mosaic(rgb)), pattern), restored, rtol=0, atol=0)


@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
def test_malvar_reproduces_channelwise_linear_images_away_from_the_border(pattern):
    # Bilinear interpolation is exact on planes and every gradient correction sums to zero with zero
    # first moments, so each channel may be its own plane.
    rows, cols = torch.meshgrid(torch.arange(12.0, dtype=torch.float64), torch.arange(13.0, dtype=torch.float64),
                                indexing="ij")
    planes = [0.1 + 0.03 * rows + 0.02 * cols, 0.8 - 0.02 * rows + 0.01 * cols, 0.3 + 0.01 * rows + 0.03 * cols]
    rgb = torch.stack(planes)[None]
    restored = malvar_demosaic(_mosaic_of(rgb, pattern), pattern)
    torch.testing.assert_close(restored[..., 2:-2, 2:-2], rgb[..., 2:-2, 2:-2], rtol=0, atol=1e-12)


def test_malvar_fills_each_case_with_the_papers_formula():
    raw = torch.rand(1, 1, 7, 7, dtype=torch.float64)
    r = raw[0, 0]
    restored = malvar_demosaic(raw, "RGGB")[0]

    def cross(i: int, j: int, step: int) -> torch.Tensor:
        return r[i - step, j] + r[i + step, j] + r[i, j - step] + r[i, j + step]

    def diagonal(i: int, j: int) -> torch.Tensor:
        return r[i - 1, j - 1] + r[i - 1, j + 1] + r[i + 1, j - 1] + r[i + 1, j + 1]

    # (2, 2) measures red: green and blue there.
    torch.testing.assert_close(restored[1, 2, 2], ((4 * r[2, 2] + 2 * cross(2, 2, 1) - cross(2, 2, 2)) / 8).clamp(0, 1))
    torch.testing.assert_close(restored[2, 2, 2], ((6 * r[2, 2] + 2 * diagonal(2, 2) - 1.5 * cross(2, 2, 2)) / 8).clamp(0, 1))
    # (2, 3) measures green between red pixels left and right: red along the row, blue along the column.
    i, j = 2, 3
    row_red = 5 * r[i, j] + 4 * (r[i, j - 1] + r[i, j + 1]) - diagonal(i, j) - (r[i, j - 2] + r[i, j + 2]) \
        + 0.5 * (r[i - 2, j] + r[i + 2, j])
    column_blue = 5 * r[i, j] + 4 * (r[i - 1, j] + r[i + 1, j]) - diagonal(i, j) - (r[i - 2, j] + r[i + 2, j]) \
        + 0.5 * (r[i, j - 2] + r[i, j + 2])
    torch.testing.assert_close(restored[0, i, j], row_red.clamp(0, 8) / 8)
    torch.testing.assert_close(restored[2, i, j], column_blue.clamp(0, 8) / 8)


def test_malvar_rejects_other_shapes():
    with pytest.raises(ConfigError, match="1 or 3 channels"):
        malvar_demosaic(torch.rand(1, 2, 8, 8))
    with pytest.raises(ConfigError, match="pattern"):
        get_baseline("malvar", pattern="RGBG")


@pytest.mark.parametrize("boundary", ["circular", "reflect"])
def test_wiener_deblurs_a_blurred_crop(boundary, gray_crop):
    task = make_task("deblur", blur_sigma=1.6, sigma=2.55, boundary=boundary)
    blurred, operator = task.degrade(gray_crop, torch.Generator().manual_seed(0))
    restored = get_baseline("wiener", operator=operator)(blurred, sigma=2.55 / 255)
    assert restored.shape == gray_crop.shape and restored.dtype == gray_crop.dtype
    assert psnr(restored, gray_crop) > psnr(blurred.clamp(0, 1), gray_crop) + 0.5


def test_wiener_with_a_vanishing_balance_is_the_inverse_filter(monkeypatch):
    from converge import baselines

    monkeypatch.setattr(baselines, "WIENER_BALANCE", 1e-9)
    image = torch.rand(1, 1, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    blur = make_task("deblur", blur_sigma=0.7, size=5, sigma=0).operator
    restored = get_baseline("wiener", operator=blur)(blur(image))
    assert torch.allclose(restored, image, atol=1e-4)


def test_wiener_needs_a_blur():
    with pytest.raises(ConfigError, match="shift-invariant blur"):
        get_baseline("wiener", operator=make_task("sr").operator)


def _dropped(image: torch.Tensor, p: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` with a fraction ``p`` of its pixels dropped, and the 0/1 mask ``(B, 1, H, W)`` kept."""
    observed, operator = make_task("inpaint", p=p).degrade(image, torch.Generator().manual_seed(seed))
    return observed, operator(torch.ones_like(image[:, :1]))


def test_fill_keeps_kept_pixels_and_stays_within_their_range(gray_crop):
    observed, mask = _dropped(gray_crop, 0.9)
    filled = fill_missing(observed, mask)
    kept = mask.expand_as(observed) == 1
    assert torch.equal(filled[kept], observed[kept])
    assert float(filled.min()) >= float(observed[kept].min()) - 1e-6
    assert float(filled.max()) <= float(observed[kept].max()) + 1e-6


def test_fill_reproduces_a_constant_image_under_any_mask():
    image = torch.full((1, 3, 40, 24), 0.3)
    mask = torch.zeros(1, 1, 40, 24)
    mask[..., 5, 7] = 1.0
    assert torch.allclose(fill_missing(image * mask, mask), image, atol=1e-6)
    assert torch.equal(fill_missing(image, torch.zeros_like(mask)), torch.full_like(image, 0.5))


def test_fill_closes_a_hole_wider_than_its_kernel_from_both_sides():
    image = torch.zeros(1, 1, 64, 64)
    image[..., 32:] = 1.0
    mask = torch.ones(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 0.0
    filled = fill_missing(image * mask, mask)
    assert bool(filled.isfinite().all())
    assert float(filled[..., 32, 20]) < 0.5 < float(filled[..., 32, 44])


def test_the_fill_baseline_beats_the_masked_input_and_needs_a_mask(gray_crop):
    observed, operator = make_task("inpaint", p=0.8).degrade(gray_crop, torch.Generator().manual_seed(0))
    filled = get_baseline("fill", operator=operator)(observed)
    assert psnr(filled, gray_crop) > psnr(observed, gray_crop) + 10.0
    with pytest.raises(ConfigError, match="pixel mask"):
        get_baseline("fill", operator=make_task("sr").operator)
