import math

import pytest
import torch

from longvideo.attention import temporal
from longvideo.attention.temporal import DualScopeAttention, FullAttention, WindowAttention, global_frame_indices
from longvideo.nodes.attention import LongVideoTemporalAttention
from longvideo.nodes.common import NodeInputError
from longvideo.nodes.conditioning import LongVideoTextEncode
from longvideo.nodes.latents import LongVideoEmptyLatent
from longvideo.nodes.loaders import LongVideoModelLoader
from longvideo.nodes.sampler import LongVideoSampler


def qkv(frames, seed=0, batch=3, heads=2, dim=8):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, frames, dim, generator=generator) for _ in range(3)]


def naive(query, key, value, half, extra, repeat_band=False, band_bias=0.0, extra_bias=0.0, token_scale=False):
    """Attention with the whole [T, T + extra] mask written out: the reference the banded blocks must match."""
    frames, dim = query.shape[-2:]
    extra = torch.tensor(extra, dtype=torch.long)
    keys = torch.cat([key, key[..., extra, :]], dim=-2)
    values = torch.cat([value, value[..., extra, :]], dim=-2)
    rows = torch.arange(frames)[:, None]
    band = (torch.arange(frames)[None, :] - rows).abs() <= half
    extra_visible = torch.ones(frames, len(extra), dtype=torch.bool) if repeat_band else (extra[None, :] - rows).abs() > half
    visible = torch.cat([band, extra_visible], dim=1)
    bias = torch.cat([torch.full(band.shape, band_bias), torch.full(extra_visible.shape, extra_bias)], dim=1)
    bias = bias.masked_fill(~visible, float("-inf"))
    scale = torch.full((frames,), 1 / math.sqrt(dim))
    if token_scale:
        scale = scale * visible.sum(1).float().log() / math.log(16)
    logits = query @ keys.transpose(-1, -2) * scale[:, None] + bias
    return logits.softmax(-1) @ values


def test_full_is_fused_sdpa():
    q, k, v = qkv(12)
    assert torch.equal(FullAttention().attend(q, k, v, 500), torch.nn.functional.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("frames", [1, 7, 33])
def test_window_covering_everything_equals_full(frames):
    q, k, v = qkv(frames)
    window = WindowAttention(window=2 * frames - 1, block_size=4)
    assert (window.attend(q, k, v, 500) - FullAttention().attend(q, k, v, 500)).abs().max() <= 1e-5


@pytest.mark.parametrize(("frames", "window", "block_size"), [(9, 1, 4), (16, 5, 4), (40, 5, 64), (37, 8, 5), (64, 17, 16)])
def test_window_equals_naive_masked_attention(frames, window, block_size):
    q, k, v = qkv(frames, seed=frames)
    ours = WindowAttention(window=window, block_size=block_size).attend(q, k, v, 500)
    assert (ours - naive(q, k, v, window // 2, [])).abs().max() <= 1e-5


def test_anchors_are_visible_to_every_query_once():
    q, k, v = qkv(30, seed=3)
    scope = WindowAttention(window=5, anchor_first=True, anchor_frames=(12, 29, 99), block_size=8)
    ours = scope.attend(q, k, v, 500)
    assert (ours - naive(q, k, v, 2, [0, 12, 29])).abs().max() <= 1e-5
    # Changing frame 0 changes every output frame; changing frame 20 only changes frames 18..22.
    v0, v20 = v.clone(), v.clone()
    v0[..., 0, :] += 1
    v20[..., 20, :] += 1
    assert ((scope.attend(q, k, v0, 500) - ours).abs().amax(dim=(0, 1, 3)) > 0).all()
    changed = (scope.attend(q, k, v20, 500) - ours).abs().amax(dim=(0, 1, 3)) > 0
    assert changed.nonzero().flatten().tolist() == [18, 19, 20, 21, 22]


def test_window_never_builds_a_frames_by_frames_matrix(monkeypatch):
    shapes = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(query, key, value, **kwargs):
        shapes.append((query.shape[-2], key.shape[-2]))
        return sdpa(query, key, value, **kwargs)

    monkeypatch.setattr(temporal.F, "scaled_dot_product_attention", recording)
    q, k, v = qkv(512, batch=1, heads=1, dim=4)
    WindowAttention(window=5, anchor_first=True).attend(q, k, v, 500)
    block = WindowAttention().block_size
    assert len(shapes) == 512 // block
    assert max(queries * keys for queries, keys in shapes) <= block * (block + 4 + 1)


def test_global_frames_follow_a_fixed_stride():
    assert global_frame_indices(64, 16) == list(range(0, 64, 4))
    assert global_frame_indices(10, 16) == list(range(10))
    assert global_frame_indices(24, 5) == [0, 4, 8, 12, 16]
    assert global_frame_indices(24, 0) == []


def test_dual_scope_degenerates_to_full():
    q, k, v = qkv(20)
    scope = DualScopeAttention(padding=20, global_frames=0, local_phase_local_bias=0, global_phase_global_bias=0, block_size=6)
    assert (scope.attend(q, k, v, 900) - FullAttention().attend(q, k, v, 900)).abs().max() <= 1e-5


@pytest.mark.parametrize("token_scale", [False, True])
@pytest.mark.parametrize("timestep", [100.0, 900.0])
def test_dual_scope_equals_naive_with_masked_ends(token_scale, timestep):
    q, k, v = qkv(45, seed=7)
    scope = DualScopeAttention(padding=3, global_frames=6, local_phase_local_bias=1.5, global_phase_global_bias=2.0,
                               token_num_scale=token_scale, block_size=8)
    band_bias, extra_bias = (1.5, 0.0) if timestep < 800 else (0.0, 2.0)
    expected = naive(q, k, v, 3, global_frame_indices(45, 6), repeat_band=True, band_bias=band_bias,
                     extra_bias=extra_bias, token_scale=token_scale)
    assert (scope.attend(q, k, v, timestep) - expected).abs().max() <= 1e-5


def test_dual_scope_biases_switch_exactly_at_the_phase_timestep():
    scope = DualScopeAttention(local_phase_t=800, global_phase_t=800)
    assert scope.biases(799.999) == (10.0, 0.0)
    assert scope.biases(800.0) == (0.0, 10.0)
    overlapping = DualScopeAttention(local_phase_t=600, global_phase_t=400)
    assert overlapping.biases(500) == (10.0, 10.0)
    # With the default +10 the softmax mass lands on the global frames at t >= 800 and on the window below.
    q, k, v = qkv(64, seed=1, dim=16)
    v_global = torch.zeros_like(v)
    v_global[..., global_frame_indices(64, 4), :] = 1.0
    scope = DualScopeAttention(padding=2, global_frames=4, block_size=16)
    mass_late = scope.attend(q / 4, k / 4, v_global, 800.0)
    mass_early = scope.attend(q / 4, k / 4, v_global, 799.0)
    middle = [i for i in range(64) if all(abs(i - g) > 2 for g in global_frame_indices(64, 4))]
    assert mass_late[..., middle, :].min() > 0.99
    assert mass_early[..., middle, :].max() < 0.01


@pytest.fixture(scope="module")
def tiny(tiny_model_folder):
    return LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder)


def patch(model, mode, **options):
    return LongVideoTemporalAttention().patch(model, mode, **options)[0]


def unet_output(model, frames=6, timestep=500):
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, frames, 4, 4, generator=generator)
    context = torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad():
        return model(latents, torch.tensor(timestep), context)


def test_full_mode_leaves_the_unet_output_bit_identical(tiny):
    model = tiny[0]
    assert torch.equal(unet_output(patch(model, "full")), unet_output(model))


def test_node_leaves_the_original_model_unchanged(tiny):
    model = tiny[0]
    before = unet_output(model, frames=12)
    windowed = patch(model, "window", window=3, anchor_frames="0, 8")
    assert not torch.equal(unet_output(windowed, frames=12), before)
    assert torch.equal(unet_output(model, frames=12), before)
    assert windowed.unet is model.unet and model.temporal_scope is None


def test_window_mode_on_the_unet_matches_full_when_the_window_covers_the_video(tiny):
    model = tiny[0]
    covering = patch(model, "window", window=11)
    assert (unet_output(covering) - unet_output(model)).abs().max() <= 1e-5


def test_sampler_runs_48_frames_with_window_attention(tiny):
    model, clip, _ = tiny
    windowed = patch(model, "window", window=5, anchor_first=True)
    positive = LongVideoTextEncode().encode(clip, "a red circle moving right")[0]
    negative = LongVideoTextEncode().encode(clip, "")[0]
    latent = LongVideoEmptyLatent().generate(width=32, height=32, frames=48, batch_size=1)[0]
    samples = LongVideoSampler().sample(windowed, positive, negative, latent, 3, 3, 7.5, "ddim", 1.0)[0]["samples"]
    assert samples.shape == (1, 4, 48, 4, 4) and torch.isfinite(samples).all()
    plain = LongVideoSampler().sample(model, positive, negative, latent, 3, 3, 7.5, "ddim", 1.0)[0]["samples"]
    assert not torch.equal(samples, plain)


def test_bad_anchor_frames_are_named(tiny):
    with pytest.raises(NodeInputError, match="anchor_frames 'first' must be frame numbers"):
        patch(tiny[0], "window", anchor_frames="first")
