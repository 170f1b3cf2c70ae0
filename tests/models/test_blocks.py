import pytest
import torch

from converge.errors import ConfigError
from converge.models.blocks import NeighbourhoodAttention, NonLocalBlock, TransformBlock, VariationalDropout2d


def attention(channels: int = 8, heads: int = 4, window: int = 5, chunk: int = 3) -> NeighbourhoodAttention:
    torch.manual_seed(0)
    return NeighbourhoodAttention(channels, heads=heads, window=window, chunk=chunk).double()


def dense_reference(module: NeighbourhoodAttention, x: torch.Tensor) -> torch.Tensor:
    """Full N x N attention per head, with every pair outside the neighbourhood masked out."""
    batch, channels, height, width = x.shape
    heads, per_head, radius = module.heads, channels // module.heads, module.window // 2
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    allowed = ((rows[:, None] - rows[None, :]).abs() <= radius) & ((cols[:, None] - cols[None, :]).abs() <= radius)

    def per_head_tokens(conv: torch.nn.Conv2d) -> torch.Tensor:
        return conv(x).reshape(batch, heads, per_head, height * width).transpose(2, 3)

    queries, keys, values = (per_head_tokens(conv) for conv in (module.query, module.key, module.value))
    scores = queries @ keys.transpose(2, 3) / per_head**0.5
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    attended = (weights @ values).transpose(2, 3).reshape(batch, channels, height, width)
    return module.output(attended)


@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("window", [1, 3, 7])
@pytest.mark.parametrize("chunk", [1, 4, 50])
@pytest.mark.parametrize("size", [(5, 3), (11, 13)])
def test_attention_equals_the_dense_masked_reference(
    heads: int, window: int, chunk: int, size: tuple[int, int]
) -> None:
    module = attention(heads=heads, window=window, chunk=chunk)
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    torch.testing.assert_close(module(x), dense_reference(module, x))


def test_gradients_match_the_dense_reference() -> None:
    module = attention(window=5, chunk=3)
    x = torch.randn(1, 8, 9, 7, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(1, 8, 9, 7, dtype=torch.float64)
    params = [x, *module.parameters()]
    tiled = torch.autograd.grad((module(x) * upstream).sum(), params)
    dense = torch.autograd.grad((dense_reference(module, x) * upstream).sum(), params)
    for got, expected in zip(tiled, dense, strict=True):
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, expected)


def test_attention_passes_gradcheck() -> None:
    module = attention(channels=4, heads=2, window=3, chunk=2)
    x = torch.randn(1, 4, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))


@pytest.mark.parametrize("window", [3, 7])
def test_pixels_outside_the_window_do_not_affect_the_output(window: int) -> None:
    module = attention(window=window, chunk=4)
    size, centre, radius = 17, 8, window // 2
    x = torch.randn(1, 8, size, size, dtype=torch.float64, requires_grad=True)
    module(x)[0, :, centre, centre].sum().backward()
    rows, cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1)), as_tuple=True)
    reach = max(int((rows - centre).abs().max()), int((cols - centre).abs().max()))
    assert reach == radius == module.receptive_radius

    perturbed = x.detach().clone()
    perturbed[..., centre + radius + 1 :, :] += 10.0
    perturbed[..., :, : centre - radius] -= 10.0
    with torch.no_grad():
        before, after = module(x)[..., centre, centre], module(perturbed)[..., centre, centre]
        assert torch.equal(before, after)
        assert not torch.allclose(module(x), module(perturbed))


def test_window_can_change_after_construction() -> None:
    module = attention(window=7, chunk=4)
    x = torch.randn(1, 8, 10, 10, dtype=torch.float64)
    wide = module(x)
    module.window = 3
    assert module.receptive_radius == 1
    narrow = module(x)
    assert not torch.allclose(wide, narrow)
    torch.testing.assert_close(narrow, dense_reference(module, x))
    torch.testing.assert_close(narrow, attention(window=3, chunk=4)(x))


def test_a_window_covering_the_image_is_plain_global_attention() -> None:
    module = attention(window=21, chunk=4)
    x = torch.randn(1, 8, 6, 7, dtype=torch.float64)
    global_reference = attention(window=21, chunk=100)
    torch.testing.assert_close(module(x), global_reference(x))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"window": 4}, "odd"),
        ({"window": 0}, "odd"),
        ({"heads": 3}, "heads"),
        ({"chunk": 0}, "chunk"),
    ],
)
def test_attention_rejects_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NeighbourhoodAttention(8, **options)


def test_setting_an_even_window_raises() -> None:
    module = attention()
    with pytest.raises(ConfigError, match="odd"):
        module.window = 6
    assert module.window == 5


def test_attention_rejects_the_wrong_channel_count() -> None:
    with pytest.raises(ConfigError, match="8 feature channels"):
        attention()(torch.randn(1, 4, 5, 5, dtype=torch.float64))


def test_non_local_block_is_attention_of_the_normalised_input_plus_a_skip() -> None:
    torch.manual_seed(0)
    block = NonLocalBlock(8, heads=2, groups=4, window=5, chunk=3).double()
    x = torch.randn(2, 8, 7, 9, dtype=torch.float64)
    out = block(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, block.attention(block.norm(x)) + x)
    block.window = 3
    assert (block.attention.window, block.receptive_radius) == (3, 1)


def test_non_local_block_rejects_channels_not_split_into_groups() -> None:
    with pytest.raises(ConfigError, match="groups"):
        NonLocalBlock(6, heads=2, groups=4, window=5)


def dropout_input() -> torch.Tensor:
    return torch.ones(4, 32, 3, 3)


def test_dropout_mask_is_held_across_calls_and_redrawn_on_reset() -> None:
    torch.manual_seed(0)
    dropout = VariationalDropout2d(0.5).train()
    x = dropout_input()
    first = dropout(x)
    torch.testing.assert_close(dropout(x), first)
    assert torch.equal(first, first[..., :1, :1].expand_as(first)), "one value per sample and channel"
    assert set(first.unique().tolist()) == {0.0, 2.0}
    dropout.reset_mask(x.shape)
    assert not torch.equal(dropout(x), first)


def test_dropout_draws_a_new_mask_for_a_new_batch_size() -> None:
    dropout = VariationalDropout2d(0.5).train()
    assert dropout(torch.ones(3, 8, 2, 2)).shape == (3, 8, 2, 2)


def test_dropout_is_the_identity_in_eval_mode_and_at_p_zero() -> None:
    x = torch.randn(2, 8, 4, 4)
    assert torch.equal(VariationalDropout2d(0.5).eval()(x), x)
    assert torch.equal(VariationalDropout2d(0.0).train()(x), x)


def test_dropout_preserves_the_expectation() -> None:
    torch.manual_seed(0)
    dropout = VariationalDropout2d(0.3).train()
    dropout.reset_mask((20000, 8))
    means = dropout(torch.ones(20000, 8, 1, 1)).mean(dim=0)
    torch.testing.assert_close(means, torch.ones_like(means), atol=0.03, rtol=0)
    kept = (dropout.mask > 0).double().mean()
    assert abs(float(kept) - 0.7) < 0.01


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_dropout_rejects_a_bad_probability(p: float) -> None:
    with pytest.raises(ConfigError, match="probability"):
        VariationalDropout2d(p)


def transform(**options) -> TransformBlock:
    torch.manual_seed(0)
    return TransformBlock(8, **options).double()


def test_transform_block_keeps_the_shape_and_expands_inside() -> None:
    block = transform()
    x = torch.randn(2, 8, 6, 5, dtype=torch.float64)
    assert block(x).shape == x.shape
    assert (block.widen.out_channels, block.narrow.in_channels) == (32, 32)
    assert block.widen.kernel_size == block.narrow.kernel_size == (3, 3)
    assert all(torch.nn.utils.parametrize.is_parametrized(conv, "weight") for conv in (block.widen, block.narrow))


def test_post_norm_normalises_the_output_and_can_be_dropped() -> None:
    x = 5.0 * torch.randn(2, 8, 6, 6, dtype=torch.float64) + 3.0
    with_norm, without_norm = transform(), transform(post_norm=False)
    groups = with_norm(x).reshape(2, 4, -1)
    torch.testing.assert_close(groups.mean(dim=-1), torch.zeros(2, 4, dtype=torch.float64), atol=1e-8, rtol=0)
    variances = groups.var(dim=-1, unbiased=False)
    torch.testing.assert_close(variances, torch.ones(2, 4, dtype=torch.float64), atol=1e-3, rtol=0)
    norms = sum(isinstance(m, torch.nn.GroupNorm) for m in with_norm.modules())
    assert (norms, sum(isinstance(m, torch.nn.GroupNorm) for m in without_norm.modules())) == (3, 2)
    torch.testing.assert_close(with_norm.post_norm(without_norm(x)), with_norm(x))


def test_transform_dropout_mask_is_held_until_reset() -> None:
    block = transform(dropout=0.5).train()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    block.reset_mask(x.shape, dtype=x.dtype)
    assert block.dropout.mask.shape == (2, 32, 1, 1)
    first = block(x)
    torch.testing.assert_close(block(x), first)
    block.reset_mask(x.shape, dtype=x.dtype)
    assert not torch.allclose(block(x), first)
    block.eval()
    torch.testing.assert_close(block(x), transform(dropout=0.0).eval()(x))


def test_transform_block_rejects_channels_not_split_into_groups() -> None:
    with pytest.raises(ConfigError, match="groups"):
        TransformBlock(6, groups=4)
