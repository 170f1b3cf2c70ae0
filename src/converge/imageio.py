"""Read images into float tensors and write them back atomically.

Reading accepts PNG (8/16-bit; L, LA, RGB, RGBA, P, I;16, I), JPEG, TIFF, BMP, WebP and single-frame
GIF and returns a ``(1, C, H, W)`` float32 tensor in [0, 1] with ``C`` = 1 (grey) or 3 (colour). A
colour file whose three channels are equal everywhere is grey content and is read as grey
(:func:`stored_channels` tells how the file stores it, so an output can be written back the same
way). The pixel count is checked from the header before anything is decoded (:func:`max_pixels`).
Alpha is dropped; palette images are expanded to RGB. Writing produces 8- or 16-bit
PNG through a temporary file in the destination folder and an atomic rename, so a failed write
never leaves a half-written output.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from converge.atomic import write_atomic
from converge.errors import ImageReadError, ImageWriteError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")
DEFAULT_MAX_PIXELS = 150_000_000
""":func:`max_pixels` without ``CONVERGE_MAX_PIXELS``: 150 megapixels (a 12000x12000 image fits)."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
_QUANTISE_ROWS = 256  # rows converted at a time when an image is written


def is_image_file(path: Path) -> bool:
    """True when ``path`` is a file whose suffix names a readable image format."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def max_pixels() -> int:
    """The largest image (width x height) the reader decodes: ``$CONVERGE_MAX_PIXELS`` or
    :data:`DEFAULT_MAX_PIXELS`. A header over it is refused before decoding (a decompression bomb
    cannot exhaust memory)."""
    configured = os.environ.get("CONVERGE_MAX_PIXELS")
    if configured is None:
        return DEFAULT_MAX_PIXELS
    if not configured.isdigit() or int(configured) < 1:
        raise ImageReadError(f"CONVERGE_MAX_PIXELS must be a positive whole number, got {configured!r}")
    return int(configured)


def read_image(path: str | Path) -> Tensor:
    """Read one image as a ``(1, C, H, W)`` float32 tensor in [0, 1], ``C`` in {1, 3}.

    Raises :class:`ImageReadError` for a missing file, a file that is not an image, a truncated
    file, a zero-size image, an image over :func:`max_pixels`, an animated file or an unsupported
    mode (mode F). CMYK and other colour spaces are converted to RGB; 16-bit colour PNG is read at
    Pillow's 8-bit precision; colour files of grey content are read as grey.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image")
    try:
        with _opened(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise ImageReadError(f"{path}: an animated image ({image.n_frames} frames): save one frame as PNG")
            image.load()
            array = _to_array(image, path)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file Pillow can read") from None
    except MemoryError:
        raise ImageReadError(f"{path}: decoding the image ran out of memory") from None
    except Exception as error:  # noqa: BLE001 - Pillow's decoders raise many types on a damaged file
        # (OSError, SyntaxError, ValueError, TypeError, struct.error, EOFError, ... seen by benchmarks/fuzz.py)
        reason = f"{type(error).__name__}: {_first_line(error)}"
        raise ImageReadError(f"{path}: unreadable or truncated image ({reason})") from None
    if array.size == 0:
        raise ImageReadError(f"{path}: the image has zero size")
    if array.ndim == 3 and _grey_content(array):
        array = array[..., 0]
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(-1)
    return tensor.permute(2, 0, 1).unsqueeze(0).contiguous()


def stored_channels(path: str | Path) -> int:
    """How many channels the file at ``path`` stores (1 grey, 3 colour), from its header: a colour
    file of grey content, which :func:`read_image` reads as grey, counts 3."""
    with _opened(Path(path)) as image:
        return 1 if image.mode in ("L", "LA", "1", "I", "F", *_SIXTEEN_BIT_MODES) else 3


def stored_bits(path: str | Path) -> int:
    """The bit depth of the file at ``path`` from its header: 16 for a 16-bit grey image, else 8."""
    with _opened(Path(path)) as image:
        return 16 if image.mode in _SIXTEEN_BIT_MODES else 8


def _opened(path: Path) -> Image.Image:
    """``Image.open(path)`` (header only) once its pixel count is checked against :func:`max_pixels`."""
    limit = max_pixels()
    # The header is checked here against our own limit; Pillow's warning or refusal at its own
    # (lower or higher) limit would only get in the way.
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        image = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if image.width * image.height > limit:
        image.close()
        raise ImageReadError(
            f"{path}: {image.width}x{image.height} is over the limit of {limit:,} pixels "
            "(set CONVERGE_MAX_PIXELS to read larger images)"
        )
    return image


def jpeg_quality(path: str | Path) -> int | None:
    """The quality (1-100) a JPEG file was written at, read from its luminance quantisation table
    (:func:`converge.physics.jpeg.quality_of_luma_table`); ``None`` for any other image format.
    Read the image first with :func:`read_image`, which reports a file that cannot be read."""
    from converge.physics.jpeg import quality_of_luma_table

    with Image.open(path) as image:
        tables = getattr(image, "quantization", None) if image.format == "JPEG" else None
        luma = tables.get(0) if tables else None
        return None if luma is None else quality_of_luma_table(list(luma))


def _to_array(image: Image.Image, path: Path) -> np.ndarray:
    """Convert a loaded Pillow image to an ``(H, W)`` or ``(H, W, 3)`` float32 array in [0, 1]."""
    if image.width == 0 or image.height == 0:
        raise ImageReadError(f"{path}: the image has zero size")
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        # Mode I is how older Pillow releases open 16-bit PNG; both hold 16-bit grey levels.
        array = np.asarray(image, dtype=np.float64) / 65535.0
        return np.clip(array, 0.0, 1.0).astype(np.float32)
    if mode == "F":
        raise ImageReadError(f"{path}: floating-point images (mode F) are not supported; save as 8- or 16-bit")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("L", "1"):
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if mode == "LA":
        return np.asarray(image.getchannel("L"), dtype=np.float32) / 255.0
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    raise ImageReadError(f"{path}: unsupported image mode {mode!r}")


def read_alpha(path: str | Path) -> np.ndarray | None:
    """The alpha plane of the file at ``path`` as an ``(H, W)`` uint8 array, or ``None`` when it has none
    or it is fully opaque. :func:`read_image` leaves alpha out (the restorers see colour only); this is
    how a caller keeps it for :func:`write_image`."""
    with _opened(Path(path)) as image:
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        if image.mode not in ("RGBA", "LA", "PA", "La", "RGBa"):
            return None
        alpha = np.asarray(image.getchannel("A"), dtype=np.uint8)
    return None if bool((alpha == 255).all()) else alpha


def write_image(path: str | Path, image: Tensor, bits: int = 8, alpha: np.ndarray | None = None) -> Path:
    """Write a ``(1, C, H, W)`` or ``(C, H, W)`` tensor in [0, 1] as an 8- or 16-bit PNG, atomically.

    Values are clipped to [0, 1] and rounded. ``C`` must be 1 or 3; 16-bit output is grey only
    (Pillow cannot write 16-bit colour PNG). ``alpha``: an ``(H, W)`` uint8 plane written as the PNG's
    alpha channel (8-bit output only), as :func:`read_alpha` returns it. Raises :class:`ImageWriteError`;
    on any failure the destination is left untouched.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ImageWriteError(f"{path}: only .png output is supported")
    if bits not in (8, 16):
        raise ImageWriteError(f"{path}: bit depth must be 8 or 16, got {bits}")
    pil_image = _to_pil(image, bits, path)
    if alpha is not None:
        pil_image = _with_alpha(pil_image, alpha, bits, path)
    folder = path.parent
    if not folder.is_dir():
        raise ImageWriteError(f"{path}: folder {folder} does not exist")
    try:
        write_atomic(path, lambda stream: pil_image.save(stream, format="PNG"))
    except OSError as error:
        raise ImageWriteError(f"{path}: could not write ({_first_line(error)})") from None
    return path


def _to_pil(image: Tensor, bits: int, path: Path) -> Image.Image:
    """Quantise a ``(1, C, H, W)`` / ``(C, H, W)`` tensor to a Pillow image of the requested depth."""
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ImageWriteError(f"{path}: expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ImageWriteError(f"{path}: expected a (1, C, H, W) tensor with C in (1, 3), got {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ImageWriteError(f"{path}: the image holds NaN or infinite values")
    if bits == 16 and image.shape[0] != 1:
        raise ImageWriteError(f"{path}: 16-bit PNG output is supported for grey images only")
    channels, height, width = image.shape
    dtype, peak = (np.uint16, 65535.0) if bits == 16 else (np.uint8, 255.0)
    quantised = np.empty((height, width, channels), dtype=dtype)
    # Row bands, so that a very large image never has a float64 copy of itself.
    for top in range(0, height, _QUANTISE_ROWS):
        band = image[:, top : top + _QUANTISE_ROWS].detach().to("cpu", torch.float64).clamp(0.0, 1.0)
        quantised[top : top + _QUANTISE_ROWS] = np.rint(band.permute(1, 2, 0).numpy() * peak).astype(dtype)
    return Image.fromarray(quantised[:, :, 0] if channels == 1 else quantised)


def _with_alpha(image: Image.Image, alpha: np.ndarray, bits: int, path: Path) -> Image.Image:
    """``image`` (mode L or RGB) with ``alpha`` as its alpha channel (mode LA or RGBA)."""
    if bits != 8:
        raise ImageWriteError(f"{path}: an image with alpha is written in 8 bits only, not {bits}")
    if alpha.dtype != np.uint8 or alpha.shape != (image.height, image.width):
        size = f"{image.width}x{image.height}"
        raise ImageWriteError(f"{path}: the alpha plane must be {size} uint8, got {alpha.shape} {alpha.dtype}")
    image = image.convert("LA" if image.mode == "L" else "RGBA")
    image.putalpha(Image.fromarray(alpha))
    return image


def _grey_content(array: np.ndarray) -> bool:
    """Whether an ``(H, W, 3)`` array holds the same values in its three channels."""
    return np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2])


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
