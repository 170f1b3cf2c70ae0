import pytest
import torch

from converge.errors import ConfigError
from converge.physics import (
    BayerMosaic,
    Downsample,
    GaussianBlur,
    Identity,
    JPEGCompression,
    PixelMask,
    RandomPixelDrop,
)
from converge.physics.tasks import make_task, task_names, task_parameters

SHAPES = {"demosaic": (2, 3, 16, 16), "deblock": (2, 1, 16, 16)}


def test_names_and_defaults():
    assert task_names() == ["denoise", "deblur", "sr", "inpaint", "demosaic", "deblock"]
    assert task_parameters("denoise") == {"sigma": 25.0}
    assert task_parameters("deblur") == {"blur_sigma": 1.6, "size": 25, "boundary": "circular", "sigma": 2.55}
    assert task_parameters("sr")["factor"] == 4 and task_parameters("sr")["kernel"] == "bicubic"
    assert task_parameters("inpaint") == {"p": 0.5, "sigma": 0.0}
    assert task_parameters("demosaic") == {"pattern": "RGGB", "sigma": 0.0}
    assert task_parameters("deblock")["quality"] == 10


def test_default_operators_and_noise():
    expected = {
        "denoise": Identity,
        "deblur": GaussianBlur,
        "sr": Downsample,
        "inpaint": RandomPixelDrop,
        "demosaic": BayerMosaic,
        "deblock": JPEGCompression,
    }
    for name, kind in expected.items():
        assert isinstance(make_task(name).operator, kind)
    assert float(make_task("denoise").noise.sigma) == pytest.approx(25 / 255)
    assert float(make_task("deblur").noise.sigma) == pytest.approx(0.01)
    assert make_task("sr").noise is None and make_task("deblock").noise is None
    blur = make_task("deblur").operator
    assert blur.kernel.shape == (25, 25) and blur.sigma == 1.6 and blur.boundary == "circular"


def test_tags_are_stable_and_distinguish_parameters():
    assert make_task("denoise").tag == "denoise-sigma25"
    assert make_task("denoise", sigma=15).tag == "denoise-sigma15"
    assert make_task("sr", factor=2).tag == "sr-factor2-kernelbicubic-sigma0"
    assert make_task("sr", kernel="gaussian").tag == "sr-factor4-kernelgaussian-blur_sigma0.5-sigma0"
    assert make_task("deblock").tag == "deblock-quality10-subsampling420"
    assert make_task("inpaint", p=0.8, sigma=2.55).tag == "inpaint-p0.8-sigma2.55"
    tags = {make_task(name).tag for name in task_names()}
    assert len(tags) == len(task_names())


@pytest.mark.parametrize("name", task_names())
def test_degrade_is_reproducible_and_returns_the_concrete_operator(name):
    shape = SHAPES.get(name, (2, 1, 16, 16))
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    task = make_task(name, sigma=5) if "sigma" in task_parameters(name) else make_task(name)
    y, operator = task.degrade(x, torch.Generator().manual_seed(4))
    again, _ = task.degrade(x, torch.Generator().manual_seed(4))
    assert torch.equal(y, again)
    assert not isinstance(operator, RandomPixelDrop)
    assert y.shape == operator(x).shape


def test_inpaint_degrades_with_the_returned_mask():
    x = torch.rand(2, 3, 16, 16) + 0.1
    y, operator = make_task("inpaint", p=0.7).degrade(x, torch.Generator().manual_seed(0))
    assert isinstance(operator, PixelMask)
    assert torch.equal(y, operator(x))
    assert abs(float((y == 0).float().mean()) - 0.7) < 0.1


def test_noise_is_in_grey_levels():
    x = torch.full((1, 1, 96, 96), 0.5, dtype=torch.float64)
    y, _ = make_task("denoise", sigma=50).degrade(x, torch.Generator().manual_seed(0))
    assert float((y - x).std() * 255) == pytest.approx(50, rel=0.03)
    clean, _ = make_task("demosaic").degrade(torch.rand(1, 3, 8, 8))
    assert clean.shape == (1, 3, 8, 8)


def test_sr_shapes_and_gaussian_width():
    y, _ = make_task("sr", factor=3).degrade(torch.rand(1, 1, 24, 24))
    assert y.shape == (1, 1, 8, 8)
    assert make_task("sr", kernel="gaussian", blur_sigma=1.2).operator.gaussian_sigma == 1.2


def test_numbers_may_be_given_as_strings():
    task = make_task("sr", factor="2", sigma="2.55")
    assert task.params["factor"] == 2 and task.params["sigma"] == 2.55


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("colorize", {}, "Unknown task"),
        ("denoise", {"noise": 5}, "valid parameters: sigma"),
        ("denoise", {"sigma": -1}, "non-negative"),
        ("denoise", {"sigma": "high"}, "number"),
        ("denoise", {"sigma": True}, "number"),
        ("deblock", {"quality": 0}, "1 to 100"),
        ("deblock", {"quality": 101}, "1 to 100"),
        ("sr", {"factor": 1}, "from 2 to 16"),
        ("sr", {"factor": 100000}, "from 2 to 16"),
        ("sr", {"factor": 2.5}, "integer"),
        ("sr", {"kernel": "lanczos"}, "bicubic, gaussian"),
        ("sr", {"blur_sigma": 1.0}, "applies only"),
        ("inpaint", {"p": 1.0}, r"\[0, 1\)"),
        ("inpaint", {"p": -0.1}, r"\[0, 1\)"),
        ("demosaic", {"pattern": "RGBG"}, "RGGB"),
        ("deblur", {"boundary": "mirror"}, "circular"),
        ("deblur", {"blur_sigma": 0}, "positive"),
        ("deblur", {"size": 0}, "at least 1"),
    ],
)
def test_invalid_tasks_and_parameters_raise(name, params, message):
    with pytest.raises(ConfigError, match=message):
        make_task(name, **params)


def test_unknown_task_parameters_query_raises():
    with pytest.raises(ConfigError, match="denoise, deblur, sr, inpaint, demosaic, deblock"):
        task_parameters("superres")


def test_with_kernel_blurs_with_the_given_kernel_and_keeps_the_noise():
    from converge.physics.blur import KernelBlur
    from converge.physics.tasks import with_kernel

    kernel = torch.zeros(3, 3, dtype=torch.float64)
    kernel[1, 2] = 1.0
    task = with_kernel(make_task("deblur", sigma=5, boundary="reflect"), kernel, "shift.npy")
    assert isinstance(task.operator, KernelBlur) and task.operator.boundary == "reflect"
    assert task.params == {"kernel": "shift.npy", "boundary": "reflect", "sigma": 5.0}
    assert task.noise is not None
    image = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    expected = KernelBlur(kernel, boundary="reflect")(image)
    assert torch.equal(task.operator(image), expected)
    with pytest.raises(ConfigError, match="deblur"):
        with_kernel(make_task("denoise"), kernel, "k")
