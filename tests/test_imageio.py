from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from converge.errors import ImageReadError, ImageWriteError
from converge.imageio import read_image, stored_channels, write_image


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    Image.fromarray(array, **kwargs).save(path)
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_gray_png_round_trip_is_exact(tmp_path, rng):
    pixels = rng.integers(0, 256, (17, 23), dtype=np.uint8)
    image = read_image(_save(tmp_path / "a.png", pixels))
    assert image.shape == (1, 1, 17, 23) and image.dtype == torch.float32
    write_image(tmp_path / "b.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), pixels)


def test_rgb_png_round_trip_is_exact(tmp_path, rng):
    pixels = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    image = read_image(_save(tmp_path / "a.png", pixels))
    assert image.shape == (1, 3, 9, 11)
    write_image(tmp_path / "b.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), pixels)


def test_sixteen_bit_png_round_trip_is_exact(tmp_path, rng):
    pixels = rng.integers(0, 65536, (12, 10), dtype=np.uint16)
    image = read_image(_save(tmp_path / "a.png", pixels))
    assert torch.allclose(image[0, 0].double(), torch.from_numpy(pixels / 65535.0), atol=1e-7)
    write_image(tmp_path / "b.png", image, bits=16)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), pixels)


@pytest.mark.parametrize("mode, channels", [("LA", 1), ("RGBA", 3), ("P", 3), ("1", 1)])
def test_other_png_modes(tmp_path, rng, mode, channels):
    base = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    base.convert(mode).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (1, channels, 8, 8)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0


def test_alpha_is_dropped_not_blended(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0
    image = read_image(_save(tmp_path / "a.png", rgba))
    assert torch.allclose(image[0, 0], torch.full((4, 4), 200 / 255))


@pytest.mark.parametrize("suffix, options", [(".jpg", {"quality": 95}), (".tif", {}), (".bmp", {})])
def test_other_formats(tmp_path, rng, suffix, options):
    pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / f"a{suffix}", **options)
    image = read_image(tmp_path / f"a{suffix}")
    assert image.shape == (1, 3, 16, 16)
    tolerance = 0.2 if suffix == ".jpg" else 1e-6
    assert float((image[0].permute(1, 2, 0) - torch.from_numpy(pixels / 255.0)).abs().mean()) < tolerance


def test_sixteen_bit_tiff(tmp_path, rng):
    pixels = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
    image = read_image(_save(tmp_path / "a.tif", pixels))
    assert torch.allclose(image[0, 0].double(), torch.from_numpy(pixels / 65535.0), atol=1e-7)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


def test_not_an_image(tmp_path):
    (tmp_path / "a.png").write_text("hello")
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(tmp_path / "a.png")


def test_truncated_png(tmp_path, rng):
    path = _save(tmp_path / "a.png", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(path)


def test_float_image_is_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4), dtype=np.float32)).save(tmp_path / "a.tif")
    with pytest.raises(ImageReadError, match="mode F"):
        read_image(tmp_path / "a.tif")


def test_write_clips_and_rounds(tmp_path):
    image = torch.tensor([[[[-0.5, 0.5, 1.5]]]])
    write_image(tmp_path / "a.png", image)
    assert np.asarray(Image.open(tmp_path / "a.png")).tolist() == [[0, 128, 255]]


@pytest.mark.parametrize(
    "name, tensor, bits, message",
    [
        ("a.jpg", torch.zeros(1, 1, 4, 4), 8, "only .png"),
        ("a.png", torch.zeros(1, 1, 4, 4), 12, "bit depth"),
        ("a.png", torch.zeros(2, 1, 4, 4), 8, "batch"),
        ("a.png", torch.zeros(1, 2, 4, 4), 8, "C in"),
        ("a.png", torch.full((1, 1, 4, 4), float("nan")), 8, "NaN"),
        ("a.png", torch.zeros(1, 3, 4, 4), 16, "grey images only"),
    ],
)
def test_write_errors_leave_nothing_behind(tmp_path, name, tensor, bits, message):
    with pytest.raises(ImageWriteError, match=message):
        write_image(tmp_path / name, tensor, bits=bits)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "a.png"
    write_image(target, torch.zeros(1, 1, 4, 4))
    before = target.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(ImageWriteError, match="disk full"):
        write_image(target, torch.ones(1, 1, 4, 4))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_write_to_missing_folder(tmp_path):
    with pytest.raises(ImageWriteError, match="does not exist"):
        write_image(tmp_path / "missing" / "a.png", torch.zeros(1, 1, 4, 4))


def test_jpeg_quality_is_read_from_the_file(tmp_path, rng):
    from converge.imageio import jpeg_quality

    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=37)
    Image.fromarray(pixels[..., 0]).save(tmp_path / "b.jpeg", quality=90)
    assert jpeg_quality(tmp_path / "a.jpg") == 37 and jpeg_quality(tmp_path / "b.jpeg") == 90
    assert jpeg_quality(_save(tmp_path / "c.png", pixels)) is None


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` grey pixels, with one tiny data chunk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def test_a_header_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = _png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ImageReadError, match="100000x100000 is over the limit of 150,000,000 pixels"):
        read_image(bomb)
    thin = _png_header_only(tmp_path / "thin.png", 12, 13_041_676)
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(thin)
    monkeypatch.setenv("CONVERGE_MAX_PIXELS", "100")
    small = _save(tmp_path / "small.png", np.zeros((20, 20), dtype=np.uint8))
    with pytest.raises(ImageReadError, match="20x20 is over the limit of 100 pixels"):
        read_image(small)
    monkeypatch.setenv("CONVERGE_MAX_PIXELS", "many")
    with pytest.raises(ImageReadError, match="CONVERGE_MAX_PIXELS must be a positive whole number"):
        read_image(small)


def test_grey_content_in_a_colour_file_is_read_as_grey(tmp_path, rng):
    grey = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    for suffix in (".png", ".webp", ".gif"):
        path = tmp_path / f"grey{suffix}"
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(path, **({"lossless": True} if suffix == ".webp" else {}))
        image = read_image(path)
        assert image.shape == (1, 1, 9, 7) and stored_channels(path) == 3
        if suffix != ".gif":
            assert torch.equal(image[0, 0], torch.from_numpy(grey).float() / 255)
    colour = _save(tmp_path / "colour.png", np.stack([grey, grey, 255 - grey], axis=-1))
    assert read_image(colour).shape == (1, 3, 9, 7) and stored_channels(colour) == 3
    assert stored_channels(_save(tmp_path / "plain.png", grey)) == 1


def test_an_animated_file_is_refused(tmp_path):
    frames = [Image.fromarray(np.full((4, 4), value, dtype=np.uint8)) for value in (0, 255)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageReadError, match="animated image \\(2 frames\\)"):
        read_image(tmp_path / "moving.gif")


def test_alpha_is_read_apart_and_written_back(tmp_path):
    from converge.imageio import read_alpha

    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 1] = 120
    rgba[..., 3] = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    path = _save(tmp_path / "a.png", rgba)
    alpha = read_alpha(path)
    assert alpha is not None and np.array_equal(alpha, rgba[..., 3])
    out = write_image(tmp_path / "b.png", read_image(path), alpha=alpha)
    assert np.array_equal(np.asarray(Image.open(out)), rgba)
    opaque = rgba.copy()
    opaque[..., 3] = 255
    assert read_alpha(_save(tmp_path / "o.png", opaque)) is None
    assert read_alpha(_save(tmp_path / "g.png", rgba[..., 0])) is None
    with pytest.raises(ImageWriteError, match="8 bits only"):
        write_image(tmp_path / "c.png", read_image(path)[:, :1], bits=16, alpha=alpha)
    with pytest.raises(ImageWriteError, match="alpha plane must be 5x4"):
        write_image(tmp_path / "c.png", read_image(path), alpha=alpha[:2])
    assert not (tmp_path / "c.png").exists()
