"""GroupSC, CSR and SC: trainable sparse coding with non-local sparsity (Lecouat, Ponce, Mairal, 2020).

For an observation ``y`` ``(B, C, H, W)`` in [0, 1] the model

1. reflect-pads ``y`` by ``k - 1`` pixels (``k`` the patch side), so that every pixel of ``y`` lies
   in ``k^2`` patches, and for ``csr`` and ``group`` cuts it into square blocks at stride ``s`` (the
   paper's block processing: blocks as large as the non-local window ``w`` by default; each block is
   restored on its own, which bounds memory). ``sc`` codes each patch independently, so it codes
   every patch of the padded image once, in strips of patch rows, and has no blocks;
2. in each block, extracts every ``k x k`` patch ``y_i`` (stride 1, ``m = C k^2`` values) and centres
   it, ``y_i^c = y_i - mu_i``, ``mu_i`` its mean (eq. 5);
3. runs ``K`` steps of the LISTA recursion from ``alpha = 0`` (eqs. 3, 11, 16)

   .. math:: \\alpha_i \\leftarrow \\mathrm{Prox}_{\\Sigma, \\Lambda_k}
             \\big[\\alpha_i + C^\\top \\big(M_i \\odot (y_i^c - D \\alpha_i)\\big)\\big]

   with per-step, per-atom thresholds ``Lambda_k`` and the penalty's prox (:mod:`converge.models.sparse_prox`):
   ``sc`` soft-thresholding; ``group`` the relaxed group lasso (eq. 11); ``csr`` the centralised
   penalty ``||u||_1 + gamma ||u - beta_i||_1`` (Prop. 1) with ``beta_i`` the similarity-weighted mean
   of the previous codes (eq. 13) and a learned ``gamma``;
4. returns the average of the overlapping patch estimates ``W alpha_i + mu_i`` (eq. 6), ``W`` a
   decoder decoupled from ``D``.

Similarities (``group``, ``csr``): ``Sigma_ij = exp(-||kappa * (x_i - x_j)||^2)`` (eq. 14) between the
patches of the current estimate ``x``, for pairs less than half a window apart (``|di|, |dj| <=
(w - k + 1) // 2`` patch positions, the authors' centred window), recomputed every ``1/f`` steps from
the patches of the averaged estimate minus the original means ``mu_i`` and blended,
``Sigma <- (1 - nu) Sigma + nu Sigma_new`` with ``nu = sigmoid(similarity_blend)`` (Sec. 3.3).
``kappa`` (``similarity_scale``, one weight per patch value) and ``nu`` are learned. The first
similarity is computed on the input itself. Within a block, ``Sigma`` is a dense ``n x n`` matrix:
with blocks as large as the window, a patch's window covers most of its block (59% of the pairs at
the compact 7x7 / 36 setting), too little sparsity for a banded product to pay.

Masked data (eqs. 15-16): when ``physics`` is a :class:`~converge.physics.mask.MaskOperator` (a
:class:`~converge.physics.mosaic.BayerMosaic`, a :class:`~converge.physics.mask.PixelMask`), ``M_i``
is the patch of its 0/1 mask and ``mu_i`` the mean of the measured values only (the released code
averages the zeros too), so entries outside the mask influence nothing; the operator comes with the
observation, in training (the trainer's operator batch) as at inference. The
first similarity is computed on the input with each unmeasured entry replaced by the mean of the
measured channels of its pixel: for a Bayer mosaic every channel then holds the raw sensor value, the
authors' per-pixel channel sum up to a factor (pixels with no measured channel read 0).

Blind denoising (Sec. 3.4): ``C``, ``D``, ``W``, ``kappa``, ``nu`` are shared and there is one set of
thresholds per trained noise level in ``sigmas``. The set of the trained level nearest to ``sigma``
is used; with ``sigma=None`` a model with several levels estimates it per image with
:func:`~converge.physics.noise.estimate_noise_sigma` (a model with one level needs no estimate).
JPEG deblocking is denoising of what the model is given (a JPEG-compressed image, its Y channel),
with one threshold set per model: the JPEG quality the trainer gives as each sample's level is not
read (it is no noise level).

Block aggregation differs from the released code in one respect: a patch that several overlapping
blocks contain gets the mean of their estimates, so every patch weighs the same in eq. 6 (the authors'
count-weighted sum of blocks weighs it by the number of blocks). For ``sc``, whose patches are coded
independently, block processing would therefore equal whole-image processing exactly, which is why
``sc`` skips the blocks (and ignores ``block`` and ``stride``). By default the
padding makes training and inference alike: a ``(w - 2k + 2)``-square training crop is one ``w x w``
block whose pixels are all fully estimated, so a plain loss needs no weighting by estimate counts.
The paper instead trains on ``w x w`` crops without padding and weights its loss by those counts;
``train_padding: false`` does that: in training mode the crop is not padded, a border pixel is the
mean of the fewer patches that hold it, and :meth:`GroupSC.training_loss_weights` gives the trainer
each pixel's patch count (normalised to mean 1). Half of a padded 24-pixel crop's block is mirrored
content, which repeats the crop's own patches and so inflates its self-similarity; an unpadded 36-pixel
crop fills the same block with image content only, at the same cost per step.

Example::

    >>> import torch
    >>> model = GroupSC(GroupSCConfig(patch_size=5, atoms=16, steps=4, window=16, similarity_every=2))
    >>> x, info = model.restore(torch.rand(1, 1, 20, 20))
    >>> x.shape, info.iterations
    (torch.Size([1, 1, 20, 20]), [4])
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from converge.errors import ConfigError
from converge.models.base import InferenceOption, RestoreInfo, Restorer, Sigma
from converge.models.registry import register_model
from converge.models.sparse_prox import csr_prox, group_prox, patch_similarity, soft_threshold
from converge.physics.base import Identity, Operator
from converge.physics.batch import OperatorBatch
from converge.physics.jpeg import JPEGCompression
from converge.physics.mask import MaskOperator

PENALTIES = ("sc", "csr", "group")
GREY_LEVELS = 255.0
# Most tensor elements one chunk of blocks or strips may hold in its largest intermediate (a
# (blocks, n, n) similarity or (blocks, n, atoms) codes). On a CPU, 2^18 float32 values (1 MB; one
# block per chunk at the paper's sizes) keep the working set near the caches and small enough for the
# allocator to reuse freed memory instead of mapping fresh pages for every temporary: on one core a
# 256x256 image restores twice as fast as with 128 MB chunks. Accelerators want large batches
# instead: 2^25 values (128 MB) there.
_CPU_CHUNK_ELEMENTS = 1 << 18
_DEVICE_CHUNK_ELEMENTS = 1 << 25
# Starting threshold per unit of noise on one code entry, by penalty (see GroupSC.reset_thresholds).
_THRESHOLD_PER_NOISE = {"sc": 1.75, "csr": 1.0, "group": 1.0}
# initialise_from_data: patches sampled and the lasso penalty of the dictionary-learning pass.
_LEARNING_PATCHES = 20000
_LEARNING_PENALTY = 0.05


@dataclass(frozen=True)
class GroupSCConfig:
    """GroupSC hyper-parameters; defaults are the paper's (Table 7).

    ``channels``: 1 (gray) or 3 (colour); ``penalty``: ``sc``, ``csr`` or ``group``; ``patch_size``:
    patch side ``k`` (default 9 gray, 7 colour); ``atoms``: dictionary size ``p`` (256); ``steps``:
    LISTA steps ``K`` (24); ``window``: side ``w`` of the non-local search window in pixels (56):
    patches at most ``(w - k + 1) // 2`` positions apart along each axis are compared;
    ``similarity_every``: ``1/f``, steps between similarity updates (6; the paper uses 8 for
    demosaicking); ``block``: side of the square blocks restored at once, in pixels (default: the
    window, as in the paper; larger blocks truncate fewer windows but cost more); ``stride``: block
    stride ``s`` in pixels, at most ``block - k + 1`` (default 12 gray, 10 colour; larger is faster,
    see the paper's Table 1);
    ``sigmas``: trained noise levels in 8-bit units, one set of thresholds each (``(25,)`` for one
    model per level, for instance ``(5, 10, 15, 20, 25)`` for a blind model; a model with one set,
    such as a deblocking or demosaicking model, uses the level only to start its thresholds).
    ``train_padding``: reflect-pad the training crops as at inference (``True``), or train on unpadded
    crops with a count-weighted loss, as the paper (``False``; see the module docstring). Inference
    always pads.
    """

    channels: int = 1
    penalty: str = "group"
    patch_size: int | None = None
    atoms: int = 256
    steps: int = 24
    window: int = 56
    similarity_every: int = 6
    block: int | None = None
    stride: int | None = None
    sigmas: tuple[float, ...] = (25.0,)
    train_padding: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.train_padding, bool):
            raise ConfigError(f"GroupSC train_padding must be true or false, got {self.train_padding!r}")
        if self.channels not in (1, 3):
            raise ConfigError(f"GroupSC channels must be 1 or 3, got {self.channels}")
        if self.penalty not in PENALTIES:
            raise ConfigError(f"GroupSC penalty must be one of {', '.join(PENALTIES)}, got {self.penalty!r}")
        # Frozen dataclass: the channel-dependent defaults are resolved once, here.
        if self.patch_size is None:
            object.__setattr__(self, "patch_size", 9 if self.channels == 1 else 7)
        if self.stride is None:
            object.__setattr__(self, "stride", 12 if self.channels == 1 else 10)
        if self.block is None:
            object.__setattr__(self, "block", self.window)
        for name in ("patch_size", "atoms", "steps", "window", "similarity_every", "block", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"GroupSC {name} must be a positive integer, got {value!r}")
        for name in ("window", "block"):
            if getattr(self, name) < self.patch_size:
                raise ConfigError(
                    f"GroupSC {name} ({getattr(self, name)}) must be at least patch_size ({self.patch_size})"
                )
        if self.stride > self.block - self.patch_size + 1:
            raise ConfigError(
                f"GroupSC stride ({self.stride}) must be at most block - patch_size + 1 "
                f"({self.block - self.patch_size + 1}) so that the blocks cover every patch"
            )
        object.__setattr__(self, "sigmas", _noise_levels(self.sigmas))


def _noise_levels(sigmas: object) -> tuple[float, ...]:
    """``sigmas`` as a tuple of distinct positive floats; anything else raises :class:`ConfigError`."""
    message = f"GroupSC sigmas must be a non-empty list of distinct positive 8-bit levels, got {sigmas!r}"
    if isinstance(sigmas, str | bytes) or not isinstance(sigmas, Sequence):
        raise ConfigError(message)
    try:
        levels = tuple(float(level) for level in sigmas)
    except (TypeError, ValueError):
        raise ConfigError(message) from None
    if not levels or any(not level > 0 for level in levels) or len(set(levels)) != len(levels):
        raise ConfigError(message)
    return levels


@register_model("groupsc")
class GroupSC(Restorer):
    """Unrolled LISTA on centred patches with a sparse (``sc``) or non-local (``csr``, ``group``) prox.

    Parameters: ``encoder`` ``C``, ``dictionary`` ``D`` and ``decoder`` ``W`` (each ``(m, p)``,
    ``m = C k^2``), ``thresholds`` ``(len(sigmas), K, p)`` (``Lambda_k`` per trained level; their
    absolute values are used), and for ``csr`` / ``group`` ``similarity_scale`` ``kappa`` ``(m,)`` and
    ``similarity_blend`` (``nu = sigmoid`` of it); for ``csr`` also ``centre_weight`` ``gamma`` (its
    absolute value). ``C = D = W`` at initialisation, a random Gaussian dictionary with unit-norm atoms
    divided by its largest singular value; :meth:`initialise_from_data` replaces it by a learned one.
    """

    config_class = GroupSCConfig
    tasks = ("denoise", "deblock", "demosaic")
    example_params = {"patch_size": 5, "atoms": 16, "steps": 4, "window": 16, "similarity_every": 2, "stride": 6}
    inference_options = {
        "stride": InferenceOption("block stride", lambda model, stride: model.checked_stride(stride)),
    }
    retired_params = frozenset({"mosaic"})

    def __init__(self, config: GroupSCConfig | None = None) -> None:
        super().__init__()
        self.config = config or GroupSCConfig()
        size = self.config.channels * self.config.patch_size**2
        atoms = self.config.atoms
        dictionary = torch.randn(size, atoms)
        dictionary = dictionary / dictionary.norm(dim=0, keepdim=True)
        self.encoder = nn.Parameter(torch.empty(size, atoms))
        self.dictionary = nn.Parameter(torch.empty(size, atoms))
        self.decoder = nn.Parameter(torch.empty(size, atoms))
        self.thresholds = nn.Parameter(torch.empty(len(self.config.sigmas), self.config.steps, atoms))
        if self.config.penalty != "sc":
            self.similarity_scale = nn.Parameter(torch.ones(size))
            self.similarity_blend = nn.Parameter(torch.tensor(1.0))
        if self.config.penalty == "csr":
            self.centre_weight = nn.Parameter(torch.tensor(1.0))
        self.set_dictionary(dictionary)

    @torch.no_grad()
    def set_dictionary(self, dictionary: Tensor) -> None:
        """Set ``C = D = W`` to ``dictionary`` ``(m, p)`` (unit-norm atoms) divided by its largest
        singular value, and restart the thresholds (:meth:`reset_thresholds`)."""
        expected = tuple(self.dictionary.shape)
        if tuple(dictionary.shape) != expected:
            raise ConfigError(f"GroupSC needs a {expected} dictionary, got {tuple(dictionary.shape)}")
        normalised = dictionary / torch.linalg.matrix_norm(dictionary.to(torch.float64), ord=2).to(dictionary.dtype)
        for parameter in (self.encoder, self.dictionary, self.decoder):
            parameter.copy_(normalised)
        self.reset_thresholds()

    @torch.no_grad()
    def reset_thresholds(self) -> None:
        """Set every threshold of trained level ``sigma`` to ``c * sigma / 255 * ||d||``.

        ``||d||`` is the mean atom norm of the normalised dictionary: white noise of level ``sigma``
        correlates with such an atom with standard deviation ``sigma ||d||``. The factor ``c`` (1.75
        for ``sc``, 1 for ``csr`` and ``group``, whose proxes shrink more for the same threshold) maximised
        the PSNR of the untrained models with a learned dictionary on Set12 crops at sigma 15, 25 and 50
        (``c`` in 0.25-3, 9x9 and 7x7 patches).
        """
        atom_norm = self.dictionary.norm(dim=0).mean()
        levels = torch.tensor(self.config.sigmas, dtype=self.thresholds.dtype) / GREY_LEVELS
        start = _THRESHOLD_PER_NOISE[self.config.penalty] * levels * atom_norm
        self.thresholds.copy_(start[:, None, None].expand_as(self.thresholds))

    @torch.no_grad()
    def adopt_weights(self, tensors: Mapping[str, Tensor], params: Mapping[str, Any], saved_model: str) -> None:
        """Start from the weights ``tensors`` of a GroupSC trained for other noise levels.

        ``params``: the saved model's parameters; they must equal this model's but for ``sigmas``, the
        block geometry (``window``, ``block``, ``stride``, which size no tensor) and ``train_padding``, and
        ``saved_model`` must be ``groupsc``, else :class:`ConfigError`. Every tensor is copied except
        the thresholds: the set of each of this model's levels ``sigma`` is the saved set of the
        nearest saved level ``sigma'`` times ``sigma / sigma'``, the ratio at which
        :meth:`reset_thresholds` would start the two. This is how a model for one level starts
        another level's training, or a blind model's, or a training run with a larger non-local window.
        """
        if saved_model != "groupsc":
            raise ConfigError(
                f"the weights were saved for a {saved_model} model, not a GroupSC: start from GroupSC weights"
            )
        try:
            saved = GroupSCConfig(**dict(params))
        except (TypeError, ConfigError) as error:
            raise ConfigError(f"the weights were saved for GroupSC parameters this version cannot build ({error})") from None
        free = ("sigmas", "window", "block", "stride", "train_padding")
        differing = [
            field.name
            for field in dataclasses.fields(GroupSCConfig)
            if field.name not in free and getattr(saved, field.name) != getattr(self.config, field.name)
        ]
        if differing:
            raise ConfigError(
                f"the weights were saved for a GroupSC with other {', '.join(differing)}: "
                f"only {', '.join(free[:-1])} and {free[-1]} may differ"
            )
        thresholds = tensors.get("thresholds")
        if thresholds is None or tuple(thresholds.shape) != (len(saved.sigmas), *self.thresholds.shape[1:]):
            raise ConfigError("the weights' thresholds do not fit the GroupSC parameters saved with them")
        rest = {name: tensor for name, tensor in tensors.items() if name != "thresholds"}
        try:
            self.load_state_dict({**rest, "thresholds": self.thresholds}, strict=True)
        except RuntimeError:
            raise ConfigError("the weights' tensors do not fit the GroupSC parameters saved with them") from None
        trained = torch.tensor(saved.sigmas, dtype=torch.float64)
        for index, level in enumerate(self.config.sigmas):
            nearest = int(torch.argmin((trained - level).abs()))
            self.thresholds[index] = thresholds[nearest] * (level / saved.sigmas[nearest])

    def initialise_from_data(self, images: Sequence[Tensor], generator: torch.Generator) -> None:
        """Learn the starting dictionary from clean images (each ``(1, C, H, W)`` in [0, 1]).

        Samples 20,000 centred patches, runs :func:`~converge.models.dictionary.learn_dictionary`
        (4 epochs of online dictionary learning, lasso penalty 0.05; about 5 s on one core for the
        gray default) and sets ``C = D = W`` from it with :meth:`set_dictionary`, which also restarts
        the thresholds for the configured noise levels.
        """
        from converge.models.dictionary import learn_dictionary, sample_patches

        channels = {image.shape[-3] for image in images}
        if channels != {self.config.channels}:
            raise ConfigError(
                f"this GroupSC expects {self.config.channels}-channel training images, "
                f"got channel counts {sorted(channels)}"
            )
        patches = sample_patches(images, self.config.patch_size, _LEARNING_PATCHES, generator)
        learned = learn_dictionary(patches, self.config.atoms, generator, lam=_LEARNING_PENALTY)
        self.set_dictionary(learned.to(self.dictionary.dtype))

    def forward(self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None) -> Tensor:
        """Restore ``y`` ``(B, C, H, W)`` in [0, 1] (``H, W >= patch_size``); differentiable, not clamped.

        ``physics``: ``None`` (plain denoising), :class:`~converge.physics.base.Identity` or JPEG
        compression (restored as noise), a :class:`~converge.physics.mask.MaskOperator` (masked data
        term), or an :class:`~converge.physics.batch.OperatorBatch` of those; anything else raises
        :class:`ConfigError`. ``sigma``: a float or ``(B,)`` on the [0, 1] scale, selecting the
        nearest trained threshold set (see the module docstring).
        """
        return self._run(y, physics, sigma, self.config.stride)[0]

    def training_forward(self, y: Tensor, operator: Operator, level: Tensor) -> Tensor:
        """The trainer's map: :meth:`forward` with the batch's operator, at each sample's noise level.

        ``level`` ``(B,)``: the trainer's degradation level per sample. A model with several threshold
        sets (blind denoising) reads it as the noise sigma in 8-bit units and trains each sample's
        nearest set (no estimate is needed), or estimates it where it is NaN (a task without a noise
        level). A model with one set does not read it, so the JPEG quality that the trainer gives for
        deblocking is never taken for a noise level. A masking operator (demosaicking) masks the data term.
        """
        if len(self.config.sigmas) > 1 and bool(torch.isfinite(level).all()):
            return self(y, physics=operator, sigma=level.detach().to(torch.float64) / GREY_LEVELS)
        return self(y, physics=operator)

    def training_loss_weights(self, x_hat: Tensor) -> Tensor | None:
        """``None`` with ``train_padding``; without it, the number of patches of the unpadded training
        output ``x_hat`` ``(B, C, H, W)`` that contain each pixel, ``(1, 1, H, W)``, divided by its mean."""
        if self.config.train_padding:
            return None
        counts = _fold_ones(*x_hat.shape[-2:], self.config.patch_size).to(x_hat.device)
        return counts / counts.mean()

    def restore(
        self, y: Tensor, physics: Operator | None = None, sigma: Sigma | None = None, stride: int | None = None
    ) -> tuple[Tensor, RestoreInfo]:
        """Inference: clamped estimate and a :class:`RestoreInfo` with ``K`` iterations per image.

        ``stride``: block stride in pixels for this call instead of the config's (``csr`` and
        ``group``; at most ``block - patch_size + 1``): larger is faster and truncates more windows.
        ``noise_level``: the blind estimate per image (8-bit), ``None`` when none was needed.
        ``extra``: ``sigma_used``, the trained level (8-bit) whose thresholds restored each image;
        ``penalty``; ``blocks``, the number of blocks per image.
        """
        start = time.perf_counter()
        with torch.no_grad():
            x, estimated, extra = self._run(y, physics, sigma, self.checked_stride(stride))
        return x.clamp(0.0, 1.0), RestoreInfo(
            iterations=[self.config.steps] * y.shape[0],
            seconds=time.perf_counter() - start,
            noise_level=None if estimated is None else (estimated * GREY_LEVELS).tolist(),
            extra=extra,
        )

    def checked_stride(self, stride: int | None) -> int:
        """The block stride to restore with: ``stride``, or the config's when ``None``."""
        if stride is None:
            return self.config.stride
        config = self.config
        if config.penalty == "sc":
            raise ConfigError("a GroupSC with penalty sc codes whole images: it has no block stride to set")
        largest = config.block - config.patch_size + 1
        if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= largest:
            raise ConfigError(
                f"GroupSC stride must be an integer from 1 to block - patch_size + 1 = {largest} "
                f"(so that the blocks cover every patch), got {stride!r}"
            )
        return stride

    def _run(
        self, y: Tensor, physics: Operator | None, sigma: Sigma | None, stride: int
    ) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        """The estimate, the blind noise estimate per image ([0, 1] scale; ``None`` when told or not
        needed) and the ``extra`` details of :meth:`restore`."""
        if y.dim() != 4:
            raise ValueError(f"GroupSC expects (B, C, H, W) images, got shape {tuple(y.shape)}")
        if min(y.shape[-2:]) < self.config.patch_size:
            raise ConfigError(
                f"GroupSC needs images of at least {self.config.patch_size}x{self.config.patch_size} pixels, "
                f"got {tuple(y.shape[-2:])}"
            )
        mask = _measurement_mask(y, physics)
        levels, estimated = self._levels(y, sigma, mask)
        thresholds = self.thresholds.abs()[levels]
        batch = y.shape[0]
        blocks: list[int] = []

        def restore_images(images: Tensor) -> Tensor:
            per_image = images.shape[0] // batch
            masks = None if mask is None else mask.reshape(images.shape)
            restored, count = self._restore_images(
                images, masks, thresholds.repeat_interleave(per_image, dim=0), stride
            )
            blocks.append(count)
            return restored

        x = self._on_model_channels(y, restore_images)
        extra = {
            "sigma_used": [self.config.sigmas[index] for index in levels.tolist()],
            "penalty": self.config.penalty,
            "blocks": blocks[0],
        }
        return x, estimated, extra

    def _levels(self, y: Tensor, sigma: Sigma | None, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Index of the threshold set per image ``(B,)`` and the blind noise estimate (``None`` if not made)."""
        batch = y.shape[0]
        trained = torch.tensor(self.config.sigmas, dtype=torch.float64)
        if len(trained) == 1:
            return torch.zeros(batch, dtype=torch.long), None
        estimated = None
        if sigma is None:
            if mask is not None:
                raise ConfigError("a blind GroupSC cannot estimate the noise of masked measurements: pass sigma")
            from converge.physics.noise import estimate_noise_sigma

            estimated = estimate_noise_sigma(y.detach())
            levels = estimated.to(torch.float64).cpu()
        else:
            levels = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu().flatten()
            if levels.numel() == 1:
                levels = levels.expand(batch)
            elif levels.numel() != batch:
                raise ConfigError(f"sigma must be one level or one per image ({batch}), got {levels.numel()} values")
        distance = (levels[:, None] * GREY_LEVELS - trained[None, :]).abs()
        return distance.argmin(dim=1).to(y.device), estimated

    def _restore_images(self, y: Tensor, mask: Tensor | None, thresholds: Tensor, stride: int) -> tuple[Tensor, int]:
        """Restore ``y`` ``(B, C, H, W)`` with blocks ``stride`` pixels apart; returns the image and the
        blocks per image (1 for ``sc``). Pads ``y`` unless training without ``train_padding``."""
        border = 0 if self.training and not self.config.train_padding else self.config.patch_size - 1
        height, width = y.shape[-2:]
        padded = F.pad(y, (border,) * 4, mode="reflect")
        padded_mask = None if mask is None else F.pad(mask, (border,) * 4, mode="reflect")
        if self.config.penalty == "sc":
            restored, blocks = self._restore_in_strips(padded, padded_mask, thresholds), 1
        else:
            restored, blocks = self._restore_in_blocks(padded, padded_mask, thresholds, stride)
        return restored[..., border : border + height, border : border + width], blocks

    def _restore_in_strips(self, padded: Tensor, mask: Tensor | None, thresholds: Tensor) -> Tensor:
        """``sc``: every patch of the whole padded image ``(B, C, H, W)`` coded once, a strip of patch
        rows at a time (its patches are independent, so this is block processing without overlap)."""
        k = self.config.patch_size
        height, width = padded.shape[-2:]
        rows, cols = height - k + 1, width - k + 1
        patch_values = padded.shape[1] * k * k
        per_row = padded.shape[0] * cols * max(self.config.atoms, patch_values)
        per_strip = max(1, _chunk_elements(padded.device) // per_row)
        total = torch.zeros_like(padded)
        for top in range(0, rows, per_strip):
            bottom = min(rows, top + per_strip) + k - 1
            strip = padded[..., top:bottom, :]
            strip_mask = None if mask is None else mask[..., top:bottom, :]
            estimates = self._code_blocks(strip, strip_mask, thresholds, None, None)
            total[..., top:bottom, :] += F.fold(estimates.transpose(1, 2), (bottom - top, width), k)
        return total / _fold_ones(height, width, k).to(padded)

    def _restore_in_blocks(
        self, padded: Tensor, mask: Tensor | None, thresholds: Tensor, stride: int
    ) -> tuple[Tensor, int]:
        """``csr``, ``group``: the padded images ``(B, C, H, W)`` restored block by block, ``stride``
        pixels apart (see the module docstring); returns them and the blocks per image."""
        config = self.config
        grid = _BlockGrid(padded.shape[-2], padded.shape[-1], config.block, stride, config.patch_size)
        window = grid.window_mask(config.window).to(padded.device)
        chunk = max(1, _chunk_elements(padded.device) // (grid.patches * max(grid.patches, config.atoms)))
        images = padded.shape[0]
        jobs = [(image, row, col) for image in range(images) for row in grid.row_starts for col in grid.col_starts]
        total = padded.new_zeros(padded.numel())
        for first in range(0, len(jobs), chunk):
            part = jobs[first : first + chunk]
            blocks = grid.cut(padded, part)
            masks = None if mask is None else grid.cut(mask, part)
            estimates = self._code_blocks(blocks, masks, thresholds[[image for image, _, _ in part]], grid, window)
            weights = torch.stack([grid.patch_weights(row, col) for _, row, col in part]).to(estimates)
            folded = grid.fold(estimates * weights[..., None])
            total = total.index_add(0, grid.pixel_index(part, padded.shape).to(padded.device), folded.flatten())
        restored = total.reshape(padded.shape) / grid.estimates_per_pixel().to(padded)
        return restored, len(jobs) // images

    def _code_blocks(
        self, blocks: Tensor, masks: Tensor | None, thresholds: Tensor, grid: _BlockGrid | None, window: Tensor | None
    ) -> Tensor:
        """Patch estimates ``W alpha_K + mu`` ``(b, n, m)`` of blocks ``(b, C, h, w)``.

        ``masks``: 0/1 like ``blocks`` or ``None``; ``thresholds``: ``(b, K, p)``; ``grid`` and
        ``window``, the ``(n, n)`` search-window mask: ``None`` for ``sc``.
        """
        config = self.config
        dtype = blocks.dtype
        encoder, dictionary, decoder = (matrix.to(dtype) for matrix in (self.encoder, self.dictionary, self.decoder))
        patches = F.unfold(blocks, config.patch_size).transpose(1, 2)
        if masks is None:
            patch_masks = None
            means = patches.mean(dim=-1, keepdim=True)
            centred = patches - means
        else:
            patch_masks = F.unfold(masks, config.patch_size).transpose(1, 2)
            measured = patch_masks.sum(dim=-1, keepdim=True).clamp_min(1.0)
            means = (patches * patch_masks).sum(dim=-1, keepdim=True) / measured
            centred = (patches - means) * patch_masks
        codes = centred.new_zeros(*centred.shape[:2], config.atoms)
        similarity = None
        if window is not None:
            similarity = self._similarity(_first_estimate(blocks, masks), means, window)
            blend = torch.sigmoid(self.similarity_blend).to(dtype)
        for step in range(config.steps):
            if similarity is not None and step > 0 and step % config.similarity_every == 0:
                estimate = grid.average(codes @ decoder.T + means)
                similarity = torch.lerp(similarity, self._similarity(estimate, means, window), blend)
            gradient_step = lista_step(codes, centred, encoder, dictionary, patch_masks)
            codes = self._prox(gradient_step, thresholds[:, step, None, :].to(dtype), similarity, codes)
        return codes @ decoder.T + means

    def _prox(self, z: Tensor, lam: Tensor, similarity: Tensor | None, previous: Tensor) -> Tensor:
        if self.config.penalty == "sc":
            return soft_threshold(z, lam)
        if self.config.penalty == "group":
            return group_prox(z, lam, similarity)
        return csr_prox(z, lam, similarity, lam * self.centre_weight.abs().to(z.dtype), centre_codes=previous)

    def _similarity(self, estimate: Tensor, means: Tensor, window: Tensor) -> Tensor:
        """``Sigma`` ``(b, n, n)`` between the patches of ``estimate`` ``(b, C, h, w)`` less ``means``."""
        patches = F.unfold(estimate, self.config.patch_size).transpose(1, 2) - means
        return patch_similarity(patches, self.similarity_scale.to(estimate.dtype), window)


def lista_step(
    codes: Tensor, centred: Tensor, encoder: Tensor, dictionary: Tensor, patch_masks: Tensor | None = None
) -> Tensor:
    """The LISTA step before the prox, ``alpha + C^T (M * (y^c - D alpha))`` (eqs. 3 and 16), ``(b, n, p)``.

    ``codes``: ``(b, n, p)``; ``centred``: centred patches ``(b, n, m)``; ``encoder`` ``C`` and
    ``dictionary`` ``D``: ``(m, p)``; ``patch_masks``: 0/1 ``(b, n, m)`` or ``None`` (all measured).
    With ``C = D`` it is a gradient step on the masked data term ``0.5 ||M * (y^c - D alpha)||^2``.
    """
    residual = centred - codes @ dictionary.T
    if patch_masks is not None:
        residual = residual * patch_masks
    return codes + residual @ encoder


class _BlockGrid:
    """Where the blocks of a padded ``(H, W)`` image lie and how their patches are weighted.

    Blocks are ``min(block, H) x min(block, W)``, start every ``stride`` pixels and the last one
    touches the far border. A patch position covered by ``c`` blocks gets weight ``1 / c`` in each,
    so summing the folded, weighted patch estimates of all blocks counts every patch once.
    """

    def __init__(self, height: int, width: int, block: int, stride: int, patch: int) -> None:
        self.patch = patch
        self.image_size = (height, width)
        self.height, self.width = min(block, height), min(block, width)
        self.row_starts = _starts(height, self.height, stride)
        self.col_starts = _starts(width, self.width, stride)
        self.rows, self.cols = self.height - patch + 1, self.width - patch + 1
        self.patches = self.rows * self.cols
        self._row_cover = _cover(self.row_starts, self.rows, height - patch + 1)
        self._col_cover = _cover(self.col_starts, self.cols, width - patch + 1)
        self._block_counts = _fold_ones(self.height, self.width, patch)

    def cut(self, image: Tensor, jobs: list[tuple[int, int, int]]) -> Tensor:
        """The blocks ``(len(jobs), C, h, w)`` of ``image`` ``(B, C, H, W)`` at ``(index, row, col)``."""
        return torch.stack([image[i, :, row : row + self.height, col : col + self.width] for i, row, col in jobs])

    def patch_weights(self, row: int, col: int) -> Tensor:
        """``1 / (blocks covering each patch)`` for the block at ``(row, col)``, flattened ``(n,)``."""
        rows = self._row_cover[row : row + self.rows]
        cols = self._col_cover[col : col + self.cols]
        return (1.0 / (rows[:, None] * cols[None, :])).flatten()

    def fold(self, patches: Tensor) -> Tensor:
        """Sum overlapping patches ``(b, n, m)`` into blocks ``(b, C, h, w)``."""
        return F.fold(patches.transpose(1, 2), (self.height, self.width), self.patch)

    def average(self, patches: Tensor) -> Tensor:
        """Average overlapping patches ``(b, n, m)`` into block images ``(b, C, h, w)``."""
        return self.fold(patches) / self._block_counts.to(patches)

    def window_mask(self, window: int) -> Tensor:
        """``(n, n)``: patches at most ``(window - k + 1) // 2`` positions apart along each axis."""
        radius = (window - self.patch + 1) // 2
        rows = torch.arange(self.rows).repeat_interleave(self.cols)
        cols = torch.arange(self.cols).repeat(self.rows)
        near_rows = (rows[:, None] - rows[None, :]).abs() <= radius
        near_cols = (cols[:, None] - cols[None, :]).abs() <= radius
        return near_rows & near_cols

    def estimates_per_pixel(self) -> Tensor:
        """``(1, 1, H, W)``: how many patches of the whole padded image contain each pixel."""
        return _fold_ones(*self.image_size, self.patch)

    def pixel_index(self, jobs: list[tuple[int, int, int]], shape: torch.Size) -> Tensor:
        """Flat indices into a ``shape`` ``(B, C, H, W)`` tensor of every pixel of every block in ``jobs``."""
        _, channels, height, width = shape
        offsets_in_block = (
            torch.arange(channels)[:, None, None] * (height * width)
            + torch.arange(self.height)[None, :, None] * width
            + torch.arange(self.width)[None, None, :]
        )
        starts = torch.tensor([image * channels * height * width + row * width + col for image, row, col in jobs])
        return (starts[:, None, None, None] + offsets_in_block[None]).flatten()


def _chunk_elements(device: torch.device) -> int:
    return _CPU_CHUNK_ELEMENTS if device.type == "cpu" else _DEVICE_CHUNK_ELEMENTS


def _starts(length: int, block: int, stride: int) -> list[int]:
    starts = list(range(0, length - block + 1, stride))
    if starts[-1] != length - block:
        starts.append(length - block)
    return starts


def _cover(starts: list[int], span: int, positions: int) -> Tensor:
    """How many blocks (starting at ``starts``, ``span`` patch positions long) cover each position."""
    cover = torch.zeros(positions, dtype=torch.float64)
    for start in starts:
        cover[start : start + span] += 1
    return cover


def _fold_ones(height: int, width: int, patch: int) -> Tensor:
    """``(1, 1, H, W)``: how many ``patch``-square patches of an ``H x W`` image contain each pixel."""
    ones = torch.ones(1, patch * patch, (height - patch + 1) * (width - patch + 1))
    return F.fold(ones, (height, width), patch)


def _first_estimate(blocks: Tensor, masks: Tensor | None) -> Tensor:
    """The image the first similarities are computed on: the blocks, with each unmeasured entry set to
    the mean of its pixel's measured channels (0 where none is measured)."""
    if masks is None:
        return blocks
    measured = masks.sum(dim=1, keepdim=True)
    pixel_mean = (blocks * masks).sum(dim=1, keepdim=True) / measured.clamp_min(1.0)
    return blocks * masks + pixel_mean * (1.0 - masks)


def _measurement_mask(y: Tensor, physics: Operator | None) -> Tensor | None:
    """The 0/1 mask ``(B, C, H, W)`` of a masking operator (or a batch of them), ``None`` for
    denoising-like degradations."""
    parts = list(physics.distinct) if isinstance(physics, OperatorBatch) else [physics]
    if all(part is None or isinstance(part, Identity | JPEGCompression) for part in parts):
        return None
    if all(isinstance(part, MaskOperator | Identity) for part in parts):
        return physics(torch.ones_like(y)).detach()
    physics = next(part for part in parts if not isinstance(part, MaskOperator | Identity | JPEGCompression))
    raise ConfigError(
        f"GroupSC restores noisy, JPEG-compressed or masked images and cannot invert {type(physics).__name__}: "
        "use another model for this task"
    )
