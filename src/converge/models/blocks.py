"""Building blocks of NERD's implicit layer: neighbourhood attention, the non-local block (NL), the
transformation block (Trans) and variational dropout.

Feature maps are ``(B, C, H, W)`` float tensors (features, not images: no range is assumed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from converge.errors import ConfigError

DEFAULT_CHUNK = 8


def check_window(window: int) -> int:
    """``window`` if it is a positive odd integer (an attention window side), else :class:`ConfigError`."""
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ConfigError(f"window must be a positive odd integer, got {window!r}")
    return window


def _check_groups(channels: int, groups: int) -> None:
    if groups < 1 or channels % groups != 0:
        raise ConfigError(f"channels ({channels}) must be a multiple of the GroupNorm groups ({groups})")


def _neighbour_mask(offset: int, queries: int, keys: int, radius: int) -> Tensor:
    """``(queries, keys)`` bool along one axis: key ``j`` within ``radius`` of query ``i``, the first
    query lying ``offset`` positions after the first key."""
    distance = torch.arange(queries)[:, None] + offset - torch.arange(keys)[None, :]
    return distance.abs() <= radius


class NeighbourhoodAttention(nn.Module):
    """Multi-head self-attention of each pixel over its own ``window x window`` neighbourhood.

    With per-head projections ``Q = W_q x``, ``K = W_k x``, ``V = W_v x`` (1x1 convolutions, ``d =
    channels / heads`` features per head), pixel ``i`` of head ``h`` gets

    .. math:: o_h(i) = \\sum_{j \\in N(i)} \\mathrm{softmax}_{j \\in N(i)}
              \\big(q_h(i) \\cdot k_h(j) / \\sqrt{d}\\big)\\, v_h(j),

    where ``N(i)`` is the set of in-image pixels whose row and column differ from ``i``'s by at most
    ``window // 2``: out-of-image neighbours take no part in the softmax (they are not zero keys).
    The heads are concatenated and mixed by a 1x1 output convolution.

    Memory: queries are processed in ``chunk x chunk`` tiles; a tile attends densely to its key
    region (the tile grown by ``window // 2``, clipped to the image) under the neighbourhood mask, so
    no ``N x N`` matrix is ever formed and the working set is about
    ``B * heads * chunk^2 * (chunk + window - 1)^2`` scores. Larger chunks waste more masked work
    but make fewer, larger matrix products. The mask is added to the scores as 0 / -inf; it depends
    only on a tile's geometry relative to its key region, so the few distinct ones are built once
    and cached. Every query sees at least itself, so no softmax row is fully masked. ``window`` may
    be changed at any time (for instance a smaller one at inference). The receptive radius of one
    call is ``window // 2``.

    Example: ``NeighbourhoodAttention(8, heads=2, window=5)(torch.rand(1, 8, 12, 12)).shape``
    is ``(1, 8, 12, 12)``.
    """

    def __init__(self, channels: int, heads: int = 4, window: int = 65, chunk: int = DEFAULT_CHUNK) -> None:
        super().__init__()
        if heads < 1 or channels % heads != 0:
            raise ConfigError(f"channels ({channels}) must be a multiple of the attention heads ({heads})")
        if chunk < 1:
            raise ConfigError(f"chunk must be a positive number of pixels, got {chunk}")
        self.channels = channels
        self.heads = heads
        self.chunk = chunk
        self.window = window
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = nn.Conv2d(channels, channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.output = nn.Conv2d(channels, channels, 1)
        self._masks: dict[tuple, Tensor] = {}

    @property
    def window(self) -> int:
        """Side ``q`` of the square neighbourhood, odd."""
        return self._window

    @window.setter
    def window(self, window: int) -> None:
        check_window(window)
        self._window = window

    @property
    def receptive_radius(self) -> int:
        """How far (in rows or columns) an input pixel can be from an output pixel it affects."""
        return self._window // 2

    def _split_heads(self, features: Tensor) -> Tensor:
        batch, _, height, width = features.shape
        return features.reshape(batch, self.heads, self.channels // self.heads, height, width)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        batch, channels, height, width = x.shape
        if channels != self.channels:
            raise ConfigError(f"expected {self.channels} feature channels, got {channels}")
        queries, keys, values = (self._split_heads(proj(x)) for proj in (self.query, self.key, self.value))
        queries = queries * (self.channels // self.heads) ** -0.5
        radius = self.receptive_radius
        band_rows = []
        for row in range(0, height, self.chunk):
            row_stop = min(row + self.chunk, height)
            key_rows = (max(row - radius, 0), min(row_stop + radius, height))
            tiles = []
            for col in range(0, width, self.chunk):
                col_stop = min(col + self.chunk, width)
                key_cols = (max(col - radius, 0), min(col_stop + radius, width))
                bias = self._mask_bias(
                    (row - key_rows[0], row_stop - row, key_rows[1] - key_rows[0]),
                    (col - key_cols[0], col_stop - col, key_cols[1] - key_cols[0]),
                    x,
                )
                tile_queries = queries[..., row:row_stop, col:col_stop].flatten(3).transpose(2, 3)
                tile_keys = keys[..., key_rows[0] : key_rows[1], key_cols[0] : key_cols[1]].flatten(3)
                tile_values = values[..., key_rows[0] : key_rows[1], key_cols[0] : key_cols[1]].flatten(3)
                weights = torch.softmax(torch.matmul(tile_queries, tile_keys) + bias, dim=-1)
                attended = torch.matmul(weights, tile_values.transpose(2, 3))
                tiles.append(attended.transpose(2, 3).reshape(batch, channels, row_stop - row, col_stop - col))
            band_rows.append(torch.cat(tiles, dim=3))
        return self.output(torch.cat(band_rows, dim=2))

    def _mask_bias(self, rows: tuple[int, int, int], cols: tuple[int, int, int], like: Tensor) -> Tensor:
        """The ``(queries, keys)`` additive mask (0 in the neighbourhood, -inf outside) of a tile whose
        rows and columns are each ``(offset in the key region, query count, key count)``."""
        key = (rows, cols, self.receptive_radius, like.device, like.dtype)
        if key not in self._masks:
            row_mask = _neighbour_mask(*rows, self.receptive_radius)
            col_mask = _neighbour_mask(*cols, self.receptive_radius)
            # (query row, query col, key row, key col) flattened to (queries, keys)
            mask = (row_mask[:, None, :, None] & col_mask[None, :, None, :]).reshape(
                rows[1] * cols[1], rows[2] * cols[2]
            )
            bias = torch.zeros(mask.shape, dtype=like.dtype).masked_fill_(~mask, float("-inf"))
            self._masks[key] = bias.to(like.device)
        return self._masks[key]


class NonLocalBlock(nn.Module):
    """NERD's non-local block ``NL(s) = MSA(GN(s)) + s``, MSA a :class:`NeighbourhoodAttention`.

    ``(B, C, H, W) -> (B, C, H, W)``. GroupNorm has ``groups`` groups and learnable affine parameters.
    Note that GroupNorm pools statistics over the whole image, so the block as a whole has no finite
    receptive radius; ``receptive_radius`` is the attention's.
    """

    def __init__(
        self, channels: int, heads: int = 4, groups: int = 4, window: int = 65, chunk: int = DEFAULT_CHUNK
    ) -> None:
        super().__init__()
        _check_groups(channels, groups)
        self.norm = nn.GroupNorm(groups, channels)
        self.attention = NeighbourhoodAttention(channels, heads=heads, window=window, chunk=chunk)

    @property
    def window(self) -> int:
        """Neighbourhood side of the attention; settable."""
        return self.attention.window

    @window.setter
    def window(self, window: int) -> None:
        self.attention.window = window

    @property
    def receptive_radius(self) -> int:
        """The attention's receptive radius, ``window // 2``."""
        return self.attention.receptive_radius

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return self.attention(self.norm(x)) + x


class VariationalDropout2d(nn.Module):
    """Dropout with one Bernoulli mask per sample and channel, held fixed until :meth:`reset_mask`.

    In training, ``forward(x) = x * m`` with ``m`` of shape ``(B, C, 1, 1)``, each entry ``0`` with
    probability ``p`` and ``1 / (1 - p)`` otherwise, so ``E[forward(x)] = x``. The same mask is
    reused across calls (every solver step of one batch sees the same network); call
    :meth:`reset_mask` once per batch. A call in training with no mask, or with one drawn for a
    different batch size or channel count, draws a fresh one. In eval mode, or with ``p = 0``, it is
    the identity.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.mask: Tensor | None = None

    def reset_mask(
        self,
        shape: torch.Size | tuple[int, ...],
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """Draw a new ``(B, C, 1, 1)`` mask for inputs of ``shape`` ``(B, C, ...)``."""
        keep = 1.0 - self.p
        draw = torch.full((shape[0], shape[1], 1, 1), keep, device=device, dtype=dtype)
        self.mask = torch.bernoulli(draw) / keep

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        if not self.training or self.p == 0.0:
            return x
        if self.mask is None or self.mask.shape[:2] != x.shape[:2]:
            self.reset_mask(x.shape, device=x.device, dtype=x.dtype)
        return x * self.mask.to(device=x.device, dtype=x.dtype)


class TransformBlock(nn.Module):
    """NERD's transformation block ``Trans(s) = GN(Conv(ReLU(GN(Conv(GN(s))))))``.

    ``(B, C, H, W) -> (B, C, H, W)``. Both convolutions are 3x3 with zero padding and weight
    normalisation; the first widens to ``expansion * C`` channels, the second narrows back.
    :class:`VariationalDropout2d` acts on the widened features after the ReLU. ``post_norm=False``
    drops the final GroupNorm (the paper's ablation). The receptive radius is 2 (two 3x3 convs),
    apart from GroupNorm's image-wide statistics.
    """

    def __init__(
        self, channels: int, expansion: int = 4, groups: int = 4, dropout: float = 0.0, post_norm: bool = True
    ) -> None:
        super().__init__()
        if expansion < 1:
            raise ConfigError(f"expansion must be a positive integer, got {expansion}")
        _check_groups(channels, groups)
        hidden = expansion * channels
        self.pre_norm = nn.GroupNorm(groups, channels)
        self.widen = weight_norm(nn.Conv2d(channels, hidden, 3, padding=1))
        self.hidden_norm = nn.GroupNorm(groups, hidden)
        self.dropout = VariationalDropout2d(dropout)
        self.narrow = weight_norm(nn.Conv2d(hidden, channels, 3, padding=1))
        self.post_norm = nn.GroupNorm(groups, channels) if post_norm else nn.Identity()

    def reset_mask(
        self,
        shape: torch.Size | tuple[int, ...],
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """Draw a new dropout mask for block inputs of ``shape`` ``(B, C, H, W)``."""
        self.dropout.reset_mask((shape[0], self.widen.out_channels), device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        hidden = torch.relu(self.hidden_norm(self.widen(self.pre_norm(x))))
        return self.post_norm(self.narrow(self.dropout(hidden)))
