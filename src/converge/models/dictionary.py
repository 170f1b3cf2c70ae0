"""Dictionary learning on image patches: patch sampling, lasso coding (FISTA) and online learning.

A dictionary ``D`` in ``R^{m x p}`` (``p`` atoms of ``m = C k^2`` values, unit-norm columns) is learned
from centred patches ``x_1, ..., x_N`` by approximately solving

.. math:: \\min_{D,\\ \\|d_j\\|_2 \\le 1} \\frac{1}{N} \\sum_i \\min_{\\alpha_i}
          \\tfrac12 \\|x_i - D \\alpha_i\\|_2^2 + \\lambda \\|\\alpha_i\\|_1

with the online method of Mairal, Bach, Ponce and Sapiro (JMLR 2010): for each mini-batch, code the
patches with the current ``D`` (FISTA on the lasso), accumulate ``A = sum alpha alpha^T`` and
``B = sum x alpha^T``, then run one sweep of block-coordinate descent on the columns of ``D``,
``d_j <- Proj_{||d|| <= 1}(d_j + (b_j - D a_j) / A_jj)``. The statistics restart with every epoch, so
codes computed with early dictionaries are forgotten. It serves to initialise sparse-coding models
(:mod:`converge.models.groupsc`) in seconds on one CPU core.

Example::

    >>> import torch
    >>> images = [torch.rand(1, 1, 32, 32)]
    >>> patches = sample_patches(images, 5, 500, torch.Generator().manual_seed(0))
    >>> learn_dictionary(patches, 16, torch.Generator().manual_seed(0), epochs=1).shape
    torch.Size([25, 16])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from converge.errors import ConfigError

# Atoms whose squared norm or code energy falls below this are considered dead and re-drawn.
_DEAD_ATOM = 1e-10


def sample_patches(images: Sequence[Tensor], patch_size: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` random ``patch_size``-square patches, each with its mean removed: ``(count, C k^2)``.

    ``images``: ``(1, C, H, W)`` or ``(C, H, W)`` tensors in [0, 1], all with the same ``C``. Each
    patch position of every image is equally likely (larger images give more patches). A patch is
    flattened channel-major (as :func:`torch.nn.functional.unfold`) and its mean over all ``C k^2``
    values is subtracted.
    """
    stack = [image[0] if image.dim() == 4 else image for image in images]
    if not stack or any(image.dim() != 3 for image in stack):
        raise ConfigError("sample_patches needs a non-empty list of (1, C, H, W) or (C, H, W) images")
    if len({image.shape[0] for image in stack}) > 1:
        raise ConfigError("sample_patches needs images with one channel count: convert them first")
    if count < 1:
        raise ConfigError(f"sample_patches needs a positive patch count, got {count}")
    positions = torch.tensor(
        [max(0, image.shape[1] - patch_size + 1) * max(0, image.shape[2] - patch_size + 1) for image in stack],
        dtype=torch.float64,
    )
    if positions.sum() == 0:
        raise ConfigError(f"every image is smaller than the {patch_size}x{patch_size} patches: lower patch_size")
    owners = torch.multinomial(positions / positions.sum(), count, replacement=True, generator=generator)
    offsets = torch.arange(patch_size)
    patches = []
    for index in owners.unique().tolist():
        image = stack[index]
        drawn = int((owners == index).sum())
        rows = torch.randint(image.shape[1] - patch_size + 1, (drawn,), generator=generator)
        cols = torch.randint(image.shape[2] - patch_size + 1, (drawn,), generator=generator)
        row_index = (rows[:, None] + offsets)[:, :, None]
        col_index = (cols[:, None] + offsets)[:, None, :]
        # (C, drawn, k, k) -> (drawn, C k^2), channel-major like unfold.
        picked = image[:, row_index, col_index].permute(1, 0, 2, 3).reshape(drawn, -1)
        patches.append(picked.to(torch.float32))
    flat = torch.cat(patches)
    return flat - flat.mean(dim=1, keepdim=True)


def lasso_codes(patches: Tensor, dictionary: Tensor, lam: float, iterations: int = 50) -> Tensor:
    """Codes ``(N, p)`` approximately minimising ``0.5 ||x_i - D a_i||^2 + lam ||a_i||_1`` per row.

    FISTA (Beck and Teboulle 2009) from zero with step ``1 / ||D||_2^2``, ``iterations`` steps.
    ``patches``: ``(N, m)``; ``dictionary``: ``(m, p)``; ``lam >= 0``.
    """
    if patches.dim() != 2 or dictionary.dim() != 2 or patches.shape[1] != dictionary.shape[0]:
        raise ConfigError(
            f"lasso_codes needs patches (N, m) and a dictionary (m, p), got {tuple(patches.shape)} "
            f"and {tuple(dictionary.shape)}"
        )
    lipschitz = float(torch.linalg.matrix_norm(dictionary, ord=2)) ** 2
    step = 1.0 / max(lipschitz, _DEAD_ATOM)
    codes = patches.new_zeros(patches.shape[0], dictionary.shape[1])
    extrapolated = codes
    momentum = 1.0
    for _ in range(iterations):
        gradient = (extrapolated @ dictionary.T - patches) @ dictionary
        moved = extrapolated - step * gradient
        updated = torch.sign(moved) * torch.relu(moved.abs() - step * lam)
        next_momentum = (1.0 + (1.0 + 4.0 * momentum**2) ** 0.5) / 2.0
        extrapolated = updated + ((momentum - 1.0) / next_momentum) * (updated - codes)
        codes, momentum = updated, next_momentum
    return codes


def lasso_objective(patches: Tensor, dictionary: Tensor, codes: Tensor, lam: float) -> Tensor:
    """Per-patch lasso objective ``0.5 ||x_i - D a_i||^2 + lam ||a_i||_1``: ``(N,)``."""
    residual = patches - codes @ dictionary.T
    return 0.5 * residual.square().sum(dim=1) + lam * codes.abs().sum(dim=1)


def learn_dictionary(
    patches: Tensor,
    atoms: int,
    generator: torch.Generator,
    lam: float = 0.05,
    epochs: int = 4,
    batch_size: int = 512,
    coding_iterations: int = 30,
) -> Tensor:
    """Learn a dictionary ``(m, atoms)`` with unit-norm columns from centred patches ``(N, m)``.

    Starts from ``atoms`` randomly drawn patches (normalised); each epoch visits the patches in a new
    random order in mini-batches of ``batch_size``, codes them with ``coding_iterations`` FISTA steps
    at penalty ``lam`` and updates every atom once per batch (see the module docstring). ``lam`` is in
    the patches' units: 0.05 leaves about 20 of 256 codes non-zero on 9x9 patches of [0, 1] images.
    An atom that no code uses is replaced by a random patch.
    """
    if patches.dim() != 2 or patches.shape[0] < atoms:
        raise ConfigError(
            f"learn_dictionary needs at least as many patches as atoms ({atoms}), got shape {tuple(patches.shape)}"
        )
    for name, value in (("atoms", atoms), ("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise ConfigError(f"learn_dictionary {name} must be a positive integer, got {value}")
    patches = patches.to(torch.float32)
    count, size = patches.shape
    dictionary = _normalised(patches[torch.randperm(count, generator=generator)[:atoms]].T, patches, generator)
    for _ in range(epochs):
        code_energy = patches.new_zeros(atoms, atoms)
        data_codes = patches.new_zeros(size, atoms)
        for batch in torch.randperm(count, generator=generator).split(batch_size):
            sample = patches[batch]
            codes = lasso_codes(sample, dictionary, lam, coding_iterations)
            code_energy += codes.T @ codes
            data_codes += sample.T @ codes
            for atom in range(atoms):
                energy = code_energy[atom, atom]
                if energy < _DEAD_ATOM:
                    continue
                column = dictionary[:, atom] + (data_codes[:, atom] - dictionary @ code_energy[:, atom]) / energy
                dictionary[:, atom] = column / column.norm().clamp_min(1.0)
        unused = code_energy.diagonal() < _DEAD_ATOM
        if bool(unused.any()):
            dictionary[:, unused] = _normalised(
                patches[torch.randint(count, (int(unused.sum()),), generator=generator)].T, patches, generator
            )
    return _normalised(dictionary, patches, generator)


def _normalised(columns: Tensor, patches: Tensor, generator: torch.Generator) -> Tensor:
    """``columns`` ``(m, q)`` scaled to unit norm; (near) zero columns are first replaced by random
    non-constant patches, or by random directions when every patch is constant (a blank image)."""
    columns = columns.clone()
    flat = columns.norm(dim=0) ** 2 < _DEAD_ATOM
    if bool(flat.any()):
        textured = patches[patches.norm(dim=1) ** 2 >= _DEAD_ATOM]
        replacements = int(flat.sum())
        if textured.shape[0] > 0:
            columns[:, flat] = textured[torch.randint(textured.shape[0], (replacements,), generator=generator)].T
        else:
            columns[:, flat] = torch.randn(columns.shape[0], replacements, generator=generator)
    return columns / columns.norm(dim=0, keepdim=True)
