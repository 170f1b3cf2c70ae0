"""Feed-forward denoising backbones, used as baselines and as priors inside iterative restorers.

DnCNN (Zhang et al., "Beyond a Gaussian Denoiser", IEEE TIP 2017): a plain stack of 3x3 convolutions
that predicts the noise ``n = R(y)`` and returns ``x = y - R(y)`` (residual learning):

    conv(C -> F) + ReLU,  (depth - 2) x [conv(F -> F) + BatchNorm + ReLU],  conv(F -> C)

Example::

    >>> import torch
    >>> model = DnCNN(DnCNNConfig(depth=5, features=8))
    >>> model(torch.rand(2, 1, 24, 24)).shape
    torch.Size([2, 1, 24, 24])
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from converge.errors import ConfigError
from converge.models.base import Restorer, Sigma
from converge.models.registry import register_model
from converge.physics.base import Operator


@dataclass(frozen=True)
class DnCNNConfig:
    """DnCNN hyper-parameters.

    ``channels``: image channels the model was trained on (1 gray, 3 colour); ``depth``: number of
    convolutions (17 for DnCNN-S); ``features``: width of the hidden layers (64 in the paper);
    ``residual``: predict the noise and subtract it (the paper) rather than the clean image;
    ``batchnorm``: BatchNorm after every middle convolution (the paper) or none.
    """

    channels: int = 1
    depth: int = 17
    features: int = 64
    residual: bool = True
    batchnorm: bool = True

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(f"DnCNN channels must be 1 or 3, got {self.channels}")
        if self.depth < 2:
            raise ConfigError(f"DnCNN depth must be at least 2 convolutions, got {self.depth}")
        if self.features < 1:
            raise ConfigError(f"DnCNN features must be positive, got {self.features}")


@register_model("dncnn")
class DnCNN(Restorer):
    """Residual CNN denoiser for one noise level (or a range, when trained blind).

    ``sigma`` and ``physics`` are accepted for the restorer contract and not used: DnCNN estimates the
    noise from the image itself (the task a set of weights was trained for is recorded by the zoo).
    A gray model (``channels=1``) given an RGB image denoises each colour channel on its own, i.e. as
    three gray images; a colour model given a gray image raises :class:`ConfigError`.
    """

    config_class = DnCNNConfig
    tasks = ("denoise", "deblock")
    example_params = {"depth": 4, "features": 8}

    def __init__(self, config: DnCNNConfig | None = None) -> None:
        super().__init__()
        self.config = config or DnCNNConfig()
        channels, features = self.config.channels, self.config.features
        layers: list[nn.Module] = [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(self.config.depth - 2):
            # The bias is redundant in front of BatchNorm, which has its own shift.
            layers.append(nn.Conv2d(features, features, 3, padding=1, bias=not self.config.batchnorm))
            if self.config.batchnorm:
                layers.append(nn.BatchNorm2d(features))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(features, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self._initialise()

    @property
    def receptive_radius(self) -> int:
        """Pixels of context on each side that influence one output pixel: one per 3x3 convolution."""
        return self.config.depth

    def forward(self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None) -> Tensor:
        """Denoise ``y`` ``(B, C, H, W)`` in [0, 1]; returns ``y - R(y)`` (or ``R(y)`` if not residual)."""
        return self._on_model_channels(y, self._denoise)

    def _denoise(self, y: Tensor) -> Tensor:
        output = self.body(y)
        return y - output if self.config.residual else output

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # A small last layer starts the residual near zero, so the first steps output roughly y.
        last = self.body[-1]
        nn.init.normal_(last.weight, std=1e-3)
