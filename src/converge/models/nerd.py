"""NERD, the Noise Equilibrium Reaching Denoiser: a one-layer implicit denoiser whose output is a fixed point.

For a noisy image ``y`` ``(B, C, H, W)`` in [0, 1] the model computes

.. math::

    s &= \\mathrm{Conv}(\\mathrm{BN}(\\mathrm{ReLU}(\\mathrm{Conv}(\\mathrm{BN}(y)))))
        && \\text{input injection, } C \\to F \\text{ features} \\\\
    z^* &= f(z^*, s) = \\mathrm{Trans}(\\mathrm{NL}(s + z^*)), \\quad z^{[0]} = 0
        && \\text{implicit layer (noise feature as equilibrium)} \\\\
    \\hat n &= \\mathrm{Conv}(\\mathrm{ReLU}(\\mathrm{BN}(z^*))), \\quad \\hat x = y + \\hat n
        && \\text{decoding, } F \\to C

with 3x3 convolutions, ``NL`` the non-local block (GroupNorm + neighbourhood attention + skip) and
``Trans`` the transformation block (weight-normalised convolutions, variational dropout,
post-normalisation), both from :mod:`converge.models.blocks`. The equilibrium is found by a
:class:`~converge.deq.DEQ` (limited-memory Broyden, 17 steps, in the paper) and differentiated with
the phantom gradient (``T = 8``, ``lam = 0.8``). ``sigma`` is not an input: one model is trained per
noise level, as in the paper.

Example::

    >>> import torch
    >>> model = NERD(NERDConfig(features=8, heads=2, groups=2, window=5)).eval()
    >>> model(torch.rand(1, 1, 16, 16)).shape
    torch.Size([1, 1, 16, 16])
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from converge.deq import DEQ, available_backward_modes, make_backward
from converge.errors import ConfigError
from converge.models.base import InferenceOption, Restorer, RestoreInfo, Sigma
from converge.models.registry import register_model
from converge.models.blocks import NonLocalBlock, TransformBlock, check_window
from converge.physics.base import Operator

EQUILIBRIA = ("noise", "image")
BLOCK_CHOICES = ("both", "nl", "trans")
# Context beyond one attention window that one pass of the network sees: 2 pixels for the
# injection's two 3x3 convolutions, 2 for Trans's, 1 for the decoder's.
_CONVOLUTION_RADIUS = 5


@dataclass(frozen=True)
class NERDConfig:
    """NERD hyper-parameters (defaults: the paper's model).

    ``channels``: image channels (1 gray, 3 colour); ``features``: feature width ``F`` (128);
    ``heads``: attention heads (4); ``groups``: GroupNorm groups (4); ``window``: side ``q`` of each
    pixel's attention neighbourhood (65, odd); ``expansion``: width factor of Trans's first conv (4);
    ``dropout``: variational dropout rate inside Trans (the paper uses it without giving the rate;
    0 here, set it in a training config).

    Solver: ``solver`` a registered name (``broyden``, ``anderson``, ``fixed_point``), at most
    ``max_iter`` evaluations of ``f`` (17), stopping per sample when the relative residual
    ``||f(z) - z|| / ||f(z)||`` is at most ``tol`` (1e-3: the paper's solver limit is reached first on
    trained weights, the tolerance only stops easy images early). ``backward``: ``phantom`` (with
    ``phantom_steps`` ``T`` = 8 and ``phantom_lam`` = 0.8), ``ift``, ``jfb``, or ``unroll`` (the explicit
    twin: ``max_iter`` differentiable plain steps from ``z = 0``, no solver).

    Ablations: ``equilibrium="image"`` decodes ``z*`` to the image itself (``x = decode(z*)``) instead
    of to the noise; ``post_norm=False`` drops Trans's last GroupNorm; ``blocks`` is ``both`` (the
    paper), ``nl`` (``f = GN(NL(s + z))``, the GroupNorm keeping the NL-only map bounded, so it needs
    ``post_norm``) or ``trans`` (``f = Trans(s + z)``).

    ``init_gain``: the initial gain of the implicit layer's last GroupNorm (Trans's post-norm, or the
    NL-only output norm), which sets how contractive ``f`` starts. PyTorch's default of 1 makes
    ``f`` expansive: Broyden does not converge in 40 steps from the first batch. 0.1 contracts so
    strongly that the solve ends in 4 to 6 steps and stays there in training (the gain hardly moves),
    so the "infinitely deep" layer acts like a shallow one. 0.4 starts where the paper's solver
    budget is used: about 10 to 18 Broyden steps at 1e-3 on noisy patches (measured for the compact
    model; see docs/models/nerd.md).
    """

    channels: int = 1
    features: int = 128
    heads: int = 4
    groups: int = 4
    window: int = 65
    expansion: int = 4
    dropout: float = 0.0
    solver: str = "broyden"
    max_iter: int = 17
    tol: float = 1e-3
    backward: str = "phantom"
    phantom_steps: int = 8
    phantom_lam: float = 0.8
    equilibrium: str = "noise"
    post_norm: bool = True
    blocks: str = "both"
    init_gain: float = 0.4

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(f"NERD channels must be 1 or 3, got {self.channels}")
        if self.features < 1:
            raise ConfigError(f"NERD features must be positive, got {self.features}")
        if self.equilibrium not in EQUILIBRIA:
            raise ConfigError(f"NERD equilibrium must be one of {', '.join(EQUILIBRIA)}, got {self.equilibrium!r}")
        if self.blocks not in BLOCK_CHOICES:
            raise ConfigError(f"NERD blocks must be one of {', '.join(BLOCK_CHOICES)}, got {self.blocks!r}")
        if self.blocks == "nl" and not self.post_norm:
            raise ConfigError("blocks='nl' needs post_norm=True: without it f(z) = z + ... has no bounded output")
        if not self.init_gain > 0.0:
            raise ConfigError(f"NERD init_gain must be positive, got {self.init_gain}")
        if self.backward not in available_backward_modes():
            raise ConfigError(
                f"NERD backward must be one of {', '.join(available_backward_modes())}, got {self.backward!r}"
            )


class ImplicitLayer(nn.Module):
    """The update ``f(z, s) = Trans(NL(s + z))`` (or one block alone, for the ablations).

    ``z`` and ``s``: ``(B, F, H, W)`` features; returns ``(B, F, H, W)``.
    """

    def __init__(self, config: NERDConfig) -> None:
        super().__init__()
        features, groups = config.features, config.groups
        uses_nl = config.blocks in ("both", "nl")
        uses_trans = config.blocks in ("both", "trans")
        self.nonlocal_block = (
            NonLocalBlock(features, heads=config.heads, groups=groups, window=config.window) if uses_nl else None
        )
        self.transform = (
            TransformBlock(
                features,
                expansion=config.expansion,
                groups=groups,
                dropout=config.dropout,
                post_norm=config.post_norm,
            )
            if uses_trans
            else None
        )
        self.output_norm = nn.GroupNorm(groups, features) if config.blocks == "nl" else None
        last_norm = self.output_norm if self.output_norm is not None else getattr(self.transform, "post_norm", None)
        if isinstance(last_norm, nn.GroupNorm):
            nn.init.constant_(last_norm.weight, config.init_gain)

    @property
    def window(self) -> int | None:
        """The attention neighbourhood side, ``None`` without a non-local block."""
        return None if self.nonlocal_block is None else self.nonlocal_block.window

    @window.setter
    def window(self, window: int) -> None:
        if self.nonlocal_block is None:
            raise ConfigError("this NERD has no non-local block (blocks='trans'): it has no attention window to set")
        self.nonlocal_block.window = window

    def reset_mask(self, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> None:
        """Draw a new dropout mask for states of ``shape`` ``(B, F, H, W)``; held for one whole solve."""
        if self.transform is not None:
            self.transform.reset_mask(shape, device=device, dtype=dtype)

    def forward(self, z: Tensor, s: Tensor) -> Tensor:
        """``f(z, s)`` for state ``z`` and injection ``s``, both ``(B, F, H, W)``."""
        features = s + z
        if self.nonlocal_block is not None:
            features = self.nonlocal_block(features)
        if self.transform is not None:
            features = self.transform(features)
        if self.output_norm is not None:
            features = self.output_norm(features)
        return features


@register_model("nerd")
class NERD(Restorer):
    """The NERD denoiser for one noise level (``sigma`` and ``physics`` are accepted and not used).

    A gray model (``channels=1``) given a colour image denoises each colour channel as its own gray
    image; a colour model given a gray image raises :class:`ConfigError`. ``set_inference`` changes
    the attention window and the solver's budget for inference without touching the weights.
    """

    config_class = NERDConfig
    example_params = {"features": 8, "heads": 2, "groups": 2, "window": 5, "max_iter": 6}
    # Each solver step widens the context and GroupNorm pools over the whole input (receptive_radius).
    exact_tiling = False
    inference_options = {
        "window": InferenceOption("attention window", lambda model, window: check_window(window), per_call=False),
    }

    def __init__(self, config: NERDConfig | None = None) -> None:
        super().__init__()
        self.config = config or NERDConfig()
        channels, features = self.config.channels, self.config.features
        self.injection = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.Conv2d(channels, features, 3, padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(features),
            nn.Conv2d(features, features, 3, padding=1),
        )
        self.deq = DEQ(
            ImplicitLayer(self.config),
            solver=self.config.solver,
            solver_options={"max_iter": self.config.max_iter, "tol": self.config.tol},
            backward=self.config.backward,
            backward_options=self._backward_options(self.config.max_iter),
        )
        self.decoder = nn.Sequential(
            nn.BatchNorm2d(features),
            nn.ReLU(),
            nn.Conv2d(features, channels, 3, padding=1),
        )

    @property
    def implicit(self) -> ImplicitLayer:
        """The update ``f(z, s)``, owned (and saved) by the DEQ as ``deq.f``."""
        return self.deq.f

    def _backward_options(self, max_iter: int) -> dict[str, int | float] | None:
        if self.config.backward == "phantom":
            return {"T": self.config.phantom_steps, "lam": self.config.phantom_lam}
        if self.config.backward == "unroll":
            return {"K": max_iter}
        return None

    @property
    def receptive_radius(self) -> int:
        """Tiling halo: one attention radius (``window // 2``) plus the convolutions' 5 pixels.

        Only approximate: each solver step widens the context by another radius and GroupNorm pools
        statistics over the whole input, so NERD has no finite receptive field and tiled results
        differ slightly from whole-image ones.
        """
        window = self.implicit.window
        return (0 if window is None else window // 2) + _CONVOLUTION_RADIUS

    def set_inference(self, window: int | None = None, max_iter: int | None = None, tol: float | None = None) -> None:
        """Change the attention window, the solver's iteration limit or its tolerance (``None``: keep).

        These are inference-time settings, not saved with the weights (``config`` keeps the trained
        values). For ``backward="unroll"`` ``max_iter`` sets the number of unrolled steps.
        """
        if window is not None:
            self.implicit.window = window
        self.deq.set_solver_limits(max_iter, tol)
        if self.config.backward == "unroll" and max_iter is not None:
            self.deq.backward_mode = make_backward("unroll", self._backward_options(max_iter))

    def solve(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Equilibrium ``z*`` and injection ``s`` (both ``(B, F, H, W)``) for ``y`` ``(B, C, H, W)``.

        In training a fresh dropout mask is drawn first and held for the whole solve (and the
        backward pass), so the solver sees one fixed map.
        """
        s = self.injection(y)
        if self.training:
            self.implicit.reset_mask(s.shape, device=s.device, dtype=s.dtype)
        # The DEQ starts from z = 0 shaped like s, as in the paper.
        return self.deq(s), s

    def forward(self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None) -> Tensor:
        """Denoise ``y`` ``(B, C, H, W)`` in [0, 1]; returns ``y + decode(z*)`` (not clamped)."""
        return self._on_model_channels(y, self._denoise)

    def _denoise(self, y: Tensor) -> Tensor:
        z_star, _ = self.solve(y)
        decoded = self.decoder(z_star)
        return y + decoded if self.config.equilibrium == "noise" else decoded

    def restore(
        self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None
    ) -> tuple[Tensor, RestoreInfo]:
        """Inference: clamped estimate and a :class:`RestoreInfo`.

        ``iterations``: solver iterations per solved image (per colour channel for a gray model on a
        colour image); ``residuals``: per iteration, the largest relative residual over the images
        still iterating; ``converged``: per image; ``extra``: the solver's one-line ``summary``.
        """
        start = time.perf_counter()
        # Weight normalisation is recomputed once for the whole solve rather than at every step.
        with torch.no_grad(), parametrize.cached():
            x = self(y, physics=physics, sigma=sigma).clamp(0.0, 1.0)
        return x, RestoreInfo.from_solver(self.deq.last_info, time.perf_counter() - start)
