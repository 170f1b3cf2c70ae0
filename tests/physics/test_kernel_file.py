import numpy as np
import pytest
import torch
from PIL import Image

from converge.errors import ConfigError
from converge.physics.kernel_file import checked_kernel, read_kernel


def test_npy_kernel_is_read_and_kept_when_it_sums_to_one(tmp_path):
    box = np.full((3, 5), 1 / 15)
    np.save(tmp_path / "box.npy", box)
    kernel, note = read_kernel(tmp_path / "box.npy")
    assert note is None
    assert kernel.dtype == torch.float64 and kernel.shape == (3, 5)
    assert torch.allclose(kernel, torch.from_numpy(box))


def test_a_kernel_not_summing_to_one_is_normalised_and_the_note_says_so(tmp_path):
    np.save(tmp_path / "k.npy", np.ones((3, 3), dtype=np.float32))
    kernel, note = read_kernel(tmp_path / "k.npy")
    assert kernel.sum().item() == pytest.approx(1.0)
    assert note is not None and "summed to 9" in note


def test_image_kernel_is_normalised_without_a_note(tmp_path):
    pixels = np.zeros((5, 5), dtype=np.uint8)
    pixels[1:4, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "line.png")
    kernel, note = read_kernel(tmp_path / "line.png")
    assert note is None
    assert kernel.sum().item() == pytest.approx(1.0)
    assert torch.allclose(kernel[1:4, 2], torch.full((3,), 1 / 3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kernel", "fragment"),
    [
        (torch.ones(3), "must be 2-D"),
        (torch.ones(4, 3), "odd sides"),
        (torch.tensor([[0.0, 1.0, float("nan")]]), "NaN"),
        (torch.tensor([[0.5, -0.1, 0.6]]), "negative"),
        (torch.zeros(3, 3), "sum to 0"),
    ],
)
def test_bad_kernels_are_refused(kernel, fragment):
    with pytest.raises(ConfigError, match=fragment):
        checked_kernel(kernel, "k")


def test_unreadable_kernel_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such kernel file"):
        read_kernel(tmp_path / "none.npy")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ConfigError, match="not a NumPy"):
        read_kernel(tmp_path / "bad.npy")
    np.save(tmp_path / "text.npy", np.array([["a", "b", "c"]]))
    with pytest.raises(ConfigError, match="numeric"):
        read_kernel(tmp_path / "text.npy")
    Image.fromarray(np.zeros((3, 3, 3), dtype=np.uint8) + np.array([255, 0, 0], dtype=np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(ConfigError, match="grey"):
        read_kernel(tmp_path / "c.png")
