import io

import numpy as np
import pytest
import torch
from PIL import Image

from converge.data.registry import data_root
from converge.errors import ConfigError
from converge.physics.jpeg import JPEGCompression

SET12_HOUSE = data_root() / "Set12" / "03.png"


def _test_image(channels: int) -> torch.Tensor:
    """A smooth image with sharp edges (64x48) whose compression error depends clearly on quality."""
    rows = torch.linspace(0, 1, 64).reshape(64, 1)
    cols = torch.linspace(0, 1, 48).reshape(1, 48)
    base = 0.5 + 0.3 * torch.sin(6 * rows) * torch.cos(5 * cols)
    base = torch.where((rows > 0.5) & (cols > 0.3), 0.9 - 0.5 * base, base)
    planes = [base, base.flip(0), base.flip(1)][:channels]
    return torch.stack(planes).unsqueeze(0).double()


@pytest.mark.parametrize("channels", [1, 3])
def test_output_range_shape_and_grid(channels):
    x = torch.cat([_test_image(channels), _test_image(channels).flip(-1)])
    y = JPEGCompression(20)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.allclose(y * 255, (y * 255).round(), atol=1e-9)


@pytest.mark.parametrize("channels", [1, 3])
def test_lower_quality_gives_larger_error(channels):
    x = _test_image(channels)
    errors = [float((JPEGCompression(q)(x) - x).pow(2).mean()) for q in (5, 20, 50, 95)]
    assert errors == sorted(errors, reverse=True)
    assert errors[0] > 3 * errors[-1]


def test_grey_input_encodes_a_greyscale_jpeg_like_pillow():
    image = np.asarray(Image.open(SET12_HOUSE))[:64, :80]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=10)
    expected = np.asarray(Image.open(buffer))
    x = torch.from_numpy(image.astype(np.float32) / 255)[None, None]
    ours = (JPEGCompression(10)(x)[0, 0] * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(ours, expected)


def test_batch_items_are_encoded_independently():
    x = torch.cat([_test_image(3), _test_image(3).flip(-2)])
    jpeg = JPEGCompression(15, subsampling="4:4:4")
    assert torch.equal(jpeg(x)[1:], jpeg(x[1:]))


def test_invalid_configuration_raises():
    for quality in (0, 101, 50.5, True):
        with pytest.raises(ConfigError):
            JPEGCompression(quality)
    with pytest.raises(ConfigError):
        JPEGCompression(50, subsampling="4:1:1")
    with pytest.raises(ValueError):
        JPEGCompression(50)(torch.rand(1, 2, 8, 8))


def test_ijg_tables_are_those_pillow_writes_and_give_back_their_quality():
    from converge.physics.jpeg import ijg_luma_table, quality_of_luma_table

    for quality in range(1, 101):
        buffer = io.BytesIO()
        Image.new("L", (8, 8), 128).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        written = tuple(Image.open(buffer).quantization[0])
        assert written == ijg_luma_table(quality), quality
        assert quality_of_luma_table(written) == quality
    # Another encoder's table: the quality whose IJG table is nearest.
    assert quality_of_luma_table([step + 1 for step in ijg_luma_table(50)]) == 49
    with pytest.raises(ValueError, match="64 steps"):
        quality_of_luma_table([1] * 63)
