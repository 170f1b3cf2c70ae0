"""Proximal operators of the SC, CSR and GroupSC sparse-coding penalties, and patch similarities.

Pure, differentiable torch functions. Codes ``alpha`` are ``(B, N, K)`` tensors (batch, ``N`` patches,
``K`` dictionary atoms); thresholds ``lam`` are nonnegative and broadcast against ``alpha`` (a float,
a ``(K,)`` per-atom vector or a full ``(B, N, K)`` tensor). Similarity matrices ``similarity`` are
``(B, N, N)`` and nonnegative; row ``i`` weighs the patches ``j`` that are similar to patch ``i``.

Example::

    >>> alpha = torch.randn(1, 4, 3)
    >>> sim = patch_similarity(torch.rand(1, 4, 9), torch.ones(9))
    >>> group_prox(alpha, torch.full((3,), 0.1), sim).shape
    torch.Size([1, 4, 3])
"""

from __future__ import annotations

import torch
from torch import Tensor

from converge.errors import ConfigError

Threshold = float | Tensor

# Floor on the row sums of the similarity matrix, so that a patch with no neighbours at all gets a
# zero centre instead of a 0/0.
_ROW_SUM_FLOOR = 1e-12
# Cap on the squared distance in patch_similarity: exp(-80) = 1.8e-35 is lost to rounding next to the
# unit diagonal, and larger arguments send exp down its much slower underflow path.
_MAX_SQ_DISTANCE = 80.0


def soft_threshold(alpha: Tensor, lam: Threshold) -> Tensor:
    """Prox of ``lam * ||.||_1``: ``sign(a) * max(|a| - lam, 0)``, elementwise.

    ``alpha``: any shape (codes ``(B, N, K)``); ``lam``: nonnegative, broadcastable to ``alpha``.
    """
    return torch.sign(alpha) * torch.relu(alpha.abs() - lam)


def centralised_codes(codes: Tensor, similarity: Tensor) -> Tensor:
    """CSR centres ``beta_i = sum_j S_ij alpha_j / sum_j S_ij`` (paper eq. 13), ``(B, N, K)``.

    ``codes``: ``(B, N, K)``; ``similarity``: ``(B, N, N)`` nonnegative. A row of ``S`` that sums to
    zero gives ``beta_i = 0`` (its row sum is floored at 1e-12).
    """
    _check_similarity(codes, similarity)
    row_sums = similarity.sum(dim=-1, keepdim=True).clamp_min(_ROW_SUM_FLOOR)
    return (similarity @ codes) / row_sums


def csr_prox(
    alpha: Tensor,
    lam: Threshold,
    similarity: Tensor,
    lam_centre: Threshold,
    centre_codes: Tensor | None = None,
) -> Tensor:
    """Prox of the CSR penalty ``lam * ||u||_1 + lam_centre * ||u - beta||_1`` (paper Prop. 1).

    ``beta = centralised_codes(centre_codes, similarity)`` (eq. 13); ``centre_codes`` are the codes
    of the previous iteration (the paper's ``alpha^(k)``) and default to ``alpha`` itself. In the
    paper's notation ``lam_centre = lam * gamma``. Per coordinate, with ``c = beta + lam * sign(beta)``,

    .. math:: \\mathrm{prox}(z) = S_{\\lambda}\\big(S_{\\lambda_c}(z - c) + c\\big).

    Case analysis for ``beta > 0`` (``beta < 0`` is the mirror image; ``beta = 0`` gives
    ``S_{lam + lam_centre}``, the prox of the merged l1 term): the minimiser ``u`` of
    ``0.5 (z - u)^2 + lam |u| + lam_centre |u - beta|`` is

    - ``z + lam + lam_centre``  if ``z < -lam - lam_centre``      (``u < 0``),
    - ``0``                     if ``|z + lam_centre| <= lam``      (kink at 0),
    - ``z - lam + lam_centre``  if ``lam - lam_centre < z < beta + lam - lam_centre`` (``0 < u < beta``),
    - ``beta``                  if ``|z - beta - lam| <= lam_centre`` (kink at ``beta``),
    - ``z - lam - lam_centre``  if ``z > beta + lam + lam_centre``  (``u > beta``),

    which is what the formula above evaluates to on each of those intervals.

    ``alpha``, ``centre_codes``: ``(B, N, K)``; ``similarity``: ``(B, N, N)`` nonnegative; ``lam``,
    ``lam_centre``: nonnegative, broadcastable to ``(B, N, K)``. Returns ``(B, N, K)``.
    """
    beta = centralised_codes(alpha if centre_codes is None else centre_codes, similarity)
    if beta.shape != alpha.shape:
        raise ConfigError(
            f"centre_codes must have the shape of alpha {tuple(alpha.shape)}, got {tuple(beta.shape)}."
        )
    centre = beta + lam * torch.sign(beta)
    return soft_threshold(soft_threshold(alpha - centre, lam_centre) + centre, lam)


def group_prox(alpha: Tensor, lam: Threshold, similarity: Tensor, eps: float = 1e-12) -> Tensor:
    """Relaxed group-lasso prox of GroupSC (paper eq. 11), per patch ``i`` and atom ``k``.

    .. math:: \\alpha_{ik} \\leftarrow \\max\\Big(1 - \\frac{\\lambda_k \\sqrt{\\sum_j S_{ij}}}
              {\\sqrt{\\sum_j S_{ij} \\alpha_{jk}^2 + \\varepsilon}}, 0\\Big)\\, \\alpha_{ik}

    The paper writes the weights as the ``i``-th column of ``S``; for a symmetric ``S`` (as built by
    :func:`patch_similarity`) rows and columns coincide. ``eps`` keeps the square root differentiable
    when a whole weighted group is zero (its output is then 0); it shifts the group norm by at most
    ``sqrt(eps)``. Special cases: ``S = I`` gives :func:`soft_threshold` of each entry; ``S`` all ones
    gives the exact group-lasso prox of ``lam * sqrt(N) * ||alpha_{:,k}||_2`` for each atom ``k``.

    ``alpha``: ``(B, N, K)``; ``lam``: nonnegative, broadcastable to ``(B, N, K)``; ``similarity``:
    ``(B, N, N)`` nonnegative. Returns ``(B, N, K)``.
    """
    _check_similarity(alpha, similarity)
    weighted_norm = torch.sqrt(similarity @ alpha.square() + eps)
    weight_total = torch.sqrt(similarity.sum(dim=-1, keepdim=True))
    return torch.relu(1.0 - lam * weight_total / weighted_norm) * alpha


def patch_similarity(patches: Tensor, scale: Tensor, window_mask: Tensor | None = None) -> Tensor:
    """Learned-distance similarities ``S_ij = exp(-||scale * (x_i - x_j)||^2)`` (paper eq. 14).

    ``patches``: ``(B, N, P)`` flattened patches; ``scale``: ``(P,)`` per-pixel weights (learned);
    ``window_mask``: optional ``(N, N)`` boolean, ``True`` where patches ``i`` and ``j`` may be
    compared (the ``w x w`` search window); other pairs get ``S_ij = 0``. Returns ``(B, N, N)`` in
    [0, 1], symmetric, with ones on the diagonal.
    """
    if patches.dim() != 3 or scale.shape != patches.shape[-1:]:
        raise ConfigError(
            "patch_similarity needs patches (B, N, P) and scale (P,), "
            f"got {tuple(patches.shape)} and {tuple(scale.shape)}."
        )
    n = patches.shape[1]
    if window_mask is not None and (window_mask.dtype != torch.bool or window_mask.shape != (n, n)):
        raise ConfigError(
            f"window_mask must be a boolean ({n}, {n}) tensor, "
            f"got {window_mask.dtype} {tuple(window_mask.shape)}."
        )
    scaled = patches * scale
    sq_norms = scaled.square().sum(dim=-1, keepdim=True)
    # One batched product gives every ||a_i||^2 + ||a_j||^2 - 2 <a_i, a_j> without a (B, N, N, P)
    # difference tensor. Adding the transpose (twice the distance) makes S = S^T exact despite the
    # product's rounding, and zeroing the diagonal makes S_ii = 1 exact. The in-place steps spare
    # (B, N, N) temporaries, which dominate the cost of a block.
    twice_sq_dist = torch.baddbmm(sq_norms + sq_norms.transpose(-1, -2), scaled, scaled.transpose(-1, -2), alpha=-2.0)
    twice_sq_dist = twice_sq_dist + twice_sq_dist.transpose(-1, -2)
    twice_sq_dist.diagonal(dim1=-2, dim2=-1).zero_()
    similarity = torch.exp(twice_sq_dist.clamp_(0.0, 2.0 * _MAX_SQ_DISTANCE).mul_(-0.5))
    if window_mask is None:
        return similarity
    if similarity.requires_grad:
        # exp's backward needs its output as it was.
        return similarity.masked_fill(~window_mask, 0.0)
    return similarity.masked_fill_(~window_mask, 0.0)


def _check_similarity(codes: Tensor, similarity: Tensor) -> None:
    if codes.dim() != 3 or similarity.shape != (codes.shape[0], codes.shape[1], codes.shape[1]):
        raise ConfigError(
            "codes must be (B, N, K) and similarity (B, N, N), "
            f"got {tuple(codes.shape)} and {tuple(similarity.shape)}."
        )
