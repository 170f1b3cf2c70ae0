import pytest
import torch

from converge.errors import ConfigError
from converge.physics.mosaic import BAYER_PATTERNS, BayerMosaic

# Raw value at (0, 0), (0, 1), (1, 0), (1, 1) of an image whose R, G, B channels are 1, 2, 3.
EXPECTED_TILES = {
    "RGGB": [1.0, 2.0, 2.0, 3.0],
    "BGGR": [3.0, 2.0, 2.0, 1.0],
    "GRBG": [2.0, 1.0, 3.0, 2.0],
    "GBRG": [2.0, 3.0, 1.0, 2.0],
}


def _channel_coded_image(height: int, width: int) -> torch.Tensor:
    return torch.tensor([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1).expand(2, 3, height, width).clone()


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_pattern_positions(pattern):
    mosaic = BayerMosaic(pattern)
    raw = mosaic.to_raw(mosaic(_channel_coded_image(5, 7)))
    assert raw.shape == (2, 1, 5, 7)
    tile = EXPECTED_TILES[pattern]
    for index, (row, col) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        assert torch.all(raw[:, 0, row::2, col::2] == tile[index])


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_exactly_one_channel_per_pixel_and_half_are_green(pattern):
    mask = BayerMosaic(pattern).channel_mask(6, 6, torch.float32, torch.device("cpu"))
    assert torch.all(mask.sum(1) == 1)
    assert float(mask[0, 1].mean()) == 0.5


def test_raw_round_trip():
    mosaic = BayerMosaic("GRBG")
    measurement = mosaic(torch.rand(2, 3, 6, 9))
    assert torch.equal(mosaic.from_raw(mosaic.to_raw(measurement)), measurement)


def test_wrong_inputs_raise():
    with pytest.raises(ConfigError):
        BayerMosaic("RGBG")
    with pytest.raises(ConfigError, match="RGB images"):
        BayerMosaic()(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError):
        BayerMosaic().from_raw(torch.rand(1, 3, 4, 4))
