"""PSNR and SSIM against scikit-image on real benchmark images (gray and colour, noise and JPEG)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from converge.data.registry import data_root
from converge.errors import ConfigError
from converge.eval.metrics import psnr, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")

DATA = data_root()


def _read(relative: str) -> np.ndarray:
    """An 8-bit image of the shared data as float64 in [0, 1], ``(H, W)`` or ``(H, W, 3)``."""
    return np.asarray(Image.open(DATA / relative), dtype=np.float64) / 255.0


def _noisy(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(clean + sigma * rng.standard_normal(clean.shape), 0.0, 1.0)


def _jpeg(clean: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.round(clean * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer), dtype=np.float64) / 255.0


def _tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W)`` or ``(H, W, C)`` -> ``(1, C, H, W)`` float32 (the library's image type)."""
    array = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array)).float()[None]


def _float32(image: np.ndarray) -> np.ndarray:
    """The float32 values our tensors hold, widened back so scikit-image also works in float64."""
    return image.astype(np.float32).astype(np.float64)


def _skimage_ssim(x: np.ndarray, ref: np.ndarray, data_range: float = 1.0) -> float:
    return skimage_metrics.structural_similarity(
        x,
        ref,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        channel_axis=None if x.ndim == 2 else 2,
    )


def _matlab_y(rgb: np.ndarray) -> np.ndarray:
    return (16.0 + rgb @ np.array([65.481, 128.553, 24.966])) / 255.0


DISTORTIONS = {
    "noise15": lambda clean: _noisy(clean, 15 / 255, seed=1),
    "noise50": lambda clean: _noisy(clean, 50 / 255, seed=2),
    "jpeg10": lambda clean: _jpeg(clean, quality=10),
}
IMAGES = ["Set12/01.png", "Set12/09.png", "CBSD68/101085.png"]


@pytest.mark.parametrize("relative", IMAGES)
@pytest.mark.parametrize("distortion", sorted(DISTORTIONS))
def test_matches_skimage_on_real_images(relative: str, distortion: str) -> None:
    clean = _float32(_read(relative))
    degraded = _float32(DISTORTIONS[distortion](clean))
    ours_psnr = psnr(_tensor(degraded), _tensor(clean)).item()
    ours_ssim = ssim(_tensor(degraded), _tensor(clean)).item()
    reference_psnr = skimage_metrics.peak_signal_noise_ratio(clean, degraded, data_range=1.0)
    assert ours_psnr == pytest.approx(reference_psnr, abs=1e-3)
    assert ours_ssim == pytest.approx(_skimage_ssim(degraded, clean), abs=1e-4)


@pytest.mark.parametrize("crop_border", [0, 4, 13])
def test_crop_border_and_y_channel_match_skimage_on_the_cropped_luma(crop_border: int) -> None:
    clean = _float32(_read("CBSD68/101087.png"))
    degraded = _float32(_jpeg(clean, quality=20))
    window = (slice(crop_border, clean.shape[0] - crop_border), slice(crop_border, clean.shape[1] - crop_border))
    y_clean, y_degraded = _matlab_y(clean)[window], _matlab_y(degraded)[window]
    x_t, ref_t = _tensor(degraded), _tensor(clean)
    assert psnr(x_t, ref_t, crop_border=crop_border, y_channel=True).item() == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(y_clean, y_degraded, data_range=1.0), abs=1e-3
    )
    assert ssim(x_t, ref_t, crop_border=crop_border, y_channel=True).item() == pytest.approx(
        _skimage_ssim(y_degraded, y_clean), abs=1e-4
    )
    rgb_ssim = _skimage_ssim(degraded[window], clean[window])
    assert ssim(x_t, ref_t, crop_border=crop_border).item() == pytest.approx(rgb_ssim, abs=1e-4)


def test_data_range_255_matches_skimage() -> None:
    clean = _read("Set12/05.png") * 255.0
    degraded = np.round(_noisy(clean / 255.0, 25 / 255, seed=3) * 255.0)
    ours = ssim(_tensor(degraded), _tensor(clean), data_range=255.0).item()
    assert ours == pytest.approx(_skimage_ssim(degraded, clean, data_range=255.0), abs=1e-4)
    assert psnr(_tensor(degraded), _tensor(clean), data_range=255.0).item() == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(clean, degraded, data_range=255.0), abs=1e-3
    )


def test_batch_entries_are_scored_independently() -> None:
    cleans = [_float32(_read(f"Set12/0{i}.png")) for i in (1, 2, 3)]
    degradeds = [_float32(_noisy(clean, (10 + 10 * i) / 255, seed=i)) for i, clean in enumerate(cleans)]
    x = torch.cat([_tensor(d) for d in degradeds])
    ref = torch.cat([_tensor(c) for c in cleans])
    batch_psnr, batch_ssim = psnr(x, ref), ssim(x, ref)
    assert batch_psnr.shape == batch_ssim.shape == (3,)
    assert batch_psnr.dtype == torch.float64
    for i in range(3):
        assert batch_psnr[i].item() == pytest.approx(psnr(x[i : i + 1], ref[i : i + 1]).item(), abs=1e-9)
        assert batch_ssim[i].item() == pytest.approx(ssim(x[i : i + 1], ref[i : i + 1]).item(), abs=1e-9)
    assert batch_psnr[0] > batch_psnr[1] > batch_psnr[2]


def test_identical_images_give_inf_psnr_and_unit_ssim() -> None:
    ref = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    assert torch.isinf(psnr(ref, ref)).all()
    assert torch.allclose(ssim(ref, ref), torch.ones(2, dtype=torch.float64))


def test_ssim_is_differentiable() -> None:
    ref = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(1))
    x = (ref + 0.1).clamp(0, 1).requires_grad_()
    ssim(x, ref).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_grayscale_y_channel_is_the_image_itself() -> None:
    generator = torch.Generator().manual_seed(2)
    ref = torch.rand(1, 1, 16, 16, generator=generator)
    x = torch.rand(1, 1, 16, 16, generator=generator)
    assert psnr(x, ref, y_channel=True) == psnr(x, ref)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_error_paths(metric) -> None:
    ref = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="shapes differ"):
        metric(torch.zeros(1, 3, 32, 31), ref)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        metric(torch.zeros(3, 32, 32), torch.zeros(3, 32, 32))
    with pytest.raises(ConfigError, match="crop_border"):
        metric(ref, ref, crop_border=-1)
    with pytest.raises(ConfigError, match="crop_border=16"):
        metric(ref, ref, crop_border=16)
    with pytest.raises(ValueError, match="data_range"):
        metric(ref, ref, data_range=0.0)
    with pytest.raises(ValueError, match="y_channel"):
        metric(torch.zeros(1, 2, 32, 32), torch.zeros(1, 2, 32, 32), y_channel=True)


def test_ssim_rejects_images_smaller_than_its_window() -> None:
    small = torch.zeros(1, 1, 10, 40)
    with pytest.raises(ConfigError, match="less than 11"):
        ssim(small, small)
    assert torch.isinf(psnr(small, small)).all()
