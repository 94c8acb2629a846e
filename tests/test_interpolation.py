import json
import random
import shutil

import numpy as np
import pytest
import torch

from longvideo.attention.temporal import WindowAttention
from longvideo.models.denoiser import Denoiser, UNet3DDenoiser
from longvideo.models.hint_unet import HintUNet3DDenoiser, hint_indices
from longvideo.models.loader import DEFAULT_SCHEDULER_CONFIG, ModelLoadError, load_text_to_video
from longvideo.nodes import interpolation as interpolation_nodes
from longvideo.nodes.common import NodeInputError
from longvideo.nodes.conditioning import LongVideoTextEncode
from longvideo.nodes.interpolation import LongVideoFlowInterpolate, LongVideoLatentInterpolate
from longvideo.nodes.loaders import LongVideoModelLoader
from longvideo.sampling.denoise import TextGuidance
from longvideo.sampling.flow_interpolation import interpolate_frames
from longvideo.sampling.interpolation import InterpolationSettings, interpolate_latents, output_frames, plan_windows
from longvideo.tools.synthetic_shapes import ShapeClip, draw_frame, random_clip, render


@pytest.fixture(scope="module")
def tiny(tiny_model_folder):
    return LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder)


@pytest.fixture(scope="module")
def hint_model_folder(tiny_model_folder, tmp_path_factory):
    """The tiny text-to-video folder with its UNet swapped for a random 9-channel [noisy, mask, hint] UNet3D."""
    from diffusers import UNet3DConditionModel

    folder = tmp_path_factory.mktemp("models") / "tiny-hint"
    shutil.copytree(tiny_model_folder, folder)
    config = dict(UNet3DConditionModel.load_config(str(folder / "unet")))
    config["in_channels"] = 2 * config["out_channels"] + 1
    torch.manual_seed(1)
    UNet3DConditionModel.from_config(config).save_pretrained(str(folder / "unet"), safe_serialization=True)
    return str(folder)


def prompts(clip):
    encode = LongVideoTextEncode().encode
    return encode(clip, "a red circle moving right")[0], encode(clip, "")[0]


def interpolate(tiny, samples, factor=2, passes=1, method="replace", seed=3, steps=2, **optional):
    model, clip, _ = tiny
    positive, negative = prompts(clip)
    return LongVideoLatentInterpolate().interpolate(
        model, positive, negative, {"samples": samples}, factor, passes, method, seed, steps, 7.5, "ddim", **optional
    )[0]["samples"]


def keyframes(frames=3, batch=1, seed=0):
    return torch.randn((batch, 4, frames, 4, 4), generator=torch.Generator().manual_seed(seed))


# --- windows -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("frames", "window", "overlap"), [(5, 17, 4), (17, 5, 1), (17, 5, 2), (30, 7, 3), (9, 2, 1)])
def test_every_gap_is_taken_from_exactly_one_window_that_holds_it(frames, window, overlap):
    windows = plan_windows(frames, window, overlap)
    owned = sorted(gap for w in windows for gap in w.gaps)
    assert owned == list(range(frames - 1))
    for w in windows:
        assert 0 <= w.start < w.stop <= frames and w.stop - w.start == min(window, frames)
        assert all(w.start <= gap and gap + 1 < w.stop for gap in w.gaps)
    assert windows[0].start == 0 and windows[-1].stop == frames


def test_gaps_go_to_the_window_where_they_are_most_central():
    # Windows [0, 5) and [3, 8) both hold gap 3 at their edge (a tie: the earlier wins); [0, 5), [2, 7), [4, 9) share
    # two gaps each, and each goes to the window with more frames on its short side.
    assert [(w.start, w.gaps) for w in plan_windows(8, 5, 2)] == [(0, (0, 1, 2, 3)), (3, (4, 5, 6))]
    assert [(w.start, w.gaps) for w in plan_windows(9, 5, 3)] == [(0, (0, 1, 2)), (2, (3, 4)), (4, (5, 6, 7))]


def test_output_frames_follow_n_minus_1_times_k_plus_1():
    assert [output_frames(5, 4, p) for p in (1, 2)] == [17, 65]
    assert output_frames(3, 2, 3) == 17


# --- latent interpolation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("passes", [1, 2, 3])
def test_frame_counts_and_input_frames_exact(tiny, passes):
    samples = keyframes(3)
    out = interpolate(tiny, samples, factor=2, passes=passes)
    assert out.shape == (1, 4, (3 - 1) * 2**passes + 1, 4, 4)
    assert torch.equal(out[:, :, :: 2**passes], samples)
    assert torch.isfinite(out).all()
    if passes > 1:
        # Pass p depends only on (seed, p): the first passes of a longer run are exactly the shorter run.
        assert torch.equal(out[:, :, ::2], interpolate(tiny, samples, factor=2, passes=passes - 1))


def test_new_frames_are_sampled_not_copied(tiny):
    samples = keyframes(2)
    out = interpolate(tiny, samples, factor=4)
    for j in (1, 2, 3):
        assert not torch.equal(out[:, :, j], samples[:, :, 0]) and not torch.equal(out[:, :, j], samples[:, :, 1])


def test_guidance_method_keeps_input_frames_exact_and_batches_work(tiny):
    samples = keyframes(2, batch=2)
    out = interpolate(tiny, samples, factor=3, method="guidance")
    assert out.shape == (2, 4, 4, 4, 4) and torch.equal(out[:, :, ::3], samples)


def test_windowed_equals_single_window_when_the_input_fits(tiny):
    samples = keyframes(5)
    single = interpolate(tiny, samples, factor=2, window=4096, overlap=1)
    fitting = interpolate(tiny, samples, factor=2, window=5, overlap=2)
    assert torch.equal(single, fitting)
    split = interpolate(tiny, samples, factor=2, window=3, overlap=1)
    assert torch.equal(split[:, :, ::2], samples) and not torch.equal(split, single)


class FrameLocalDenoiser(Denoiser):
    """Looks at each frame alone (and its hint): any window split must give exactly the one-window result."""

    latent_channels = 4
    scheduler_config = dict(DEFAULT_SCHEDULER_CONFIG)

    def __init__(self, takes_known_frames=False):
        self.takes_known_frames = takes_known_frames
        self.frames_seen = []

    def load(self):
        return torch.device("cpu")

    def __call__(self, latents, timestep, context, known=None):
        self.frames_seen.append(latents.shape[2])
        prediction = 0.3 * latents + 0.1 * latents.roll(1, dims=1) + 0.01 * context.mean()
        if known is not None:
            index = torch.tensor(hint_indices(latents.shape[2], known.indices))
            prediction = prediction + 0.2 * known.latents.index_select(2, index)
        return prediction


@pytest.mark.parametrize("method", ["replace", "learned", "blend"])
def test_overlapping_windows_stitch_exactly_for_a_frame_local_model(method):
    """Window seams are invisible: per-frame noise and per-frame hints do not depend on the window split."""
    samples = keyframes(11)
    guidance = TextGuidance(torch.randn(1, 3, 32), torch.randn(1, 3, 32), 5.0)

    def run(window, overlap):
        denoiser = FrameLocalDenoiser(takes_known_frames=method == "learned")
        settings = InterpolationSettings(factor=3, method=method, window=window, overlap=overlap)
        return interpolate_latents(denoiser, guidance, samples, settings, steps=3, seed=7), denoiser.frames_seen

    single, seen = run(64, 1)
    assert set(seen) == {31}
    for window, overlap in ((4, 1), (5, 3), (6, 2)):
        windowed, seen = run(window, overlap)
        assert set(seen) == {(window - 1) * 3 + 1}
        assert torch.equal(windowed, single)


def test_long_outputs_use_sliding_window_attention(tiny, monkeypatch):
    scopes = []
    original = UNet3DDenoiser.with_temporal_attention

    def record(self, scope):
        scopes.append(scope)
        return original(self, scope)

    monkeypatch.setattr(UNet3DDenoiser, "with_temporal_attention", record)
    interpolate(tiny, keyframes(3), factor=2, attention_window=5)   # 5 sampled frames: the model's own attention
    assert scopes == []
    interpolate(tiny, keyframes(4), factor=2, attention_window=5)   # 7 sampled frames: window attention
    assert scopes == [WindowAttention(window=5)]
    interpolate(tiny, keyframes(9), factor=2, attention_window=0)   # 0: never
    assert len(scopes) == 1


def test_progress_counts_every_step_of_every_window_and_cancel_stops(tiny, monkeypatch):
    updates = []

    class Recording:
        def __init__(self, total, description=""):
            updates.append(total)

        def update(self, count=1):
            updates.append("step")
            if updates.count("step") == 3:
                raise InterruptedError("cancelled")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(interpolation_nodes, "Progress", Recording)
    with pytest.raises(InterruptedError):
        interpolate(tiny, keyframes(5), factor=2, passes=2, steps=2, window=3, overlap=1)
    # Pass 1: 5 inputs in windows of 3 -> 2 windows; pass 2: 9 inputs -> 4 windows; 2 steps each.
    assert updates[0] == (2 + 4) * 2 and updates.count("step") == 3


@pytest.mark.parametrize(("optional", "message"), [
    ({"factor": 1}, "factor must be at least 2"),
    ({"window": 4, "overlap": 4}, "overlap must be at least 1 and below the window"),
    ({"method": "learned"}, "needs a model that takes known frames"),
    ({"frame_guidance": -1.0}, "frame_guidance must be 0 or more"),
])
def test_bad_settings_are_clear_errors(tiny, optional, message):
    with pytest.raises(NodeInputError, match=message):
        interpolate(tiny, keyframes(3), **optional)


def test_bad_latents_are_clear_errors(tiny):
    with pytest.raises(NodeInputError, match="at least 2"):
        interpolate(tiny, keyframes(1))
    with pytest.raises(NodeInputError, match="channels"):
        interpolate(tiny, torch.zeros(1, 3, 3, 4, 4))


# --- the learned path: hint-channel UNet3D ------------------------------------------------------------------------------


def test_hint_of_frame_j_is_the_last_known_frame_at_or_before_it():
    assert hint_indices(9, [0, 4, 8]) == [0, 0, 0, 0, 1, 1, 1, 1, 2]
    assert hint_indices(17, list(range(0, 17, 4))) == [j // 4 for j in range(17)]
    assert hint_indices(5, [2, 0]) == [1, 1, 0, 0, 0]
    assert hint_indices(4, [2]) == [0, 0, 0, 0]


def test_loader_recognises_a_hint_channel_unet(hint_model_folder):
    model = load_text_to_video(hint_model_folder)
    assert isinstance(model.denoiser, HintUNet3DDenoiser)
    assert model.denoiser.takes_known_frames and model.denoiser.latent_channels == 4
    assert model.denoiser.unet.config.in_channels == 9


def test_loader_rejects_other_channel_layouts(hint_model_folder, tmp_path):
    folder = tmp_path / "odd"
    shutil.copytree(hint_model_folder, folder)
    config_file = folder / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    config["in_channels"] = 5
    config_file.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="in_channels 5"):
        load_text_to_video(str(folder))


def test_learned_path_feeds_noisy_mask_and_hint_channels(hint_model_folder, monkeypatch):
    model, clip, _ = LongVideoModelLoader().load(model="", dtype="fp32", model_path=hint_model_folder)
    inputs = []
    forward = type(model.unet).forward

    def spy(self, sample, *args, **kwargs):
        inputs.append(sample.clone())
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(type(model.unet), "forward", spy)
    samples = keyframes(3)
    out = interpolate((model, clip, None), samples, factor=4, method="learned", steps=2)
    assert out.shape == (1, 4, 9, 4, 4) and torch.equal(out[:, :, ::4], samples)
    assert len(inputs) == 2
    for sample in inputs:
        assert sample.shape == (2, 9, 9, 4, 4)                # CFG batch, [noisy 4 | mask 1 | hint 4], 9 frames
        assert torch.equal(sample[:, 4:5], torch.zeros(2, 1, 9, 4, 4))
        for j in range(9):
            assert torch.equal(sample[:, 5:, j], samples[:, :, j // 4].expand(2, -1, -1, -1))


def test_hint_model_needs_the_learned_method(hint_model_folder):
    model, clip, _ = LongVideoModelLoader().load(model="", dtype="fp32", model_path=hint_model_folder)
    with pytest.raises(NodeInputError, match="choose method 'learned'"):
        interpolate((model, clip, None), keyframes(3), method="replace")
    # frame guidance compares with a pass without known frames, which this model cannot run
    with pytest.raises(NodeInputError, match="frame_guidance 2.0 needs a model that also samples without known frames"):
        interpolate((model, clip, None), keyframes(3), method="learned", frame_guidance=2.0)
    with pytest.raises(ValueError, match="LongVideoLatentInterpolate"):
        model(torch.zeros(1, 4, 3, 4, 4), torch.tensor(10), torch.zeros(1, 3, 32))


# --- optical flow ---------------------------------------------------------------------------------------------------


def psnr(a, b):
    return 10 * np.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-10))


@pytest.mark.parametrize("method", ["dis", "farneback", "linear"])
def test_flow_interpolation_keeps_input_frames_and_counts(method):
    frames = torch.rand(3, 24, 32, 3)
    out = LongVideoFlowInterpolate().interpolate(frames, 4, method)[0]
    assert out.shape == (9, 24, 32, 3) and out.dtype == torch.float32
    assert torch.equal(out[::4], frames)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_linear_blending_is_the_cross_fade():
    frames = torch.rand(2, 8, 8, 3)
    out = interpolate_frames(frames, 4, "linear")
    assert torch.allclose(out[1], 0.75 * frames[0] + 0.25 * frames[1], atol=1e-6)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_follows_a_translating_shape(method):
    """A square moving 8 pixels between two frames: the flow midpoint is near the truth, far better than a cross-fade."""
    clip = ShapeClip("square", "green", "right", (20.0, 32.0), 2.0, 8.0)
    pair = torch.from_numpy(np.stack([draw_frame(clip, 0), draw_frame(clip, 4)]).astype(np.float32) / 255)
    truth = [draw_frame(clip, t).astype(np.float32) / 255 for t in (1, 2, 3)]
    flow = interpolate_frames(pair, 4, method).numpy()
    linear = interpolate_frames(pair, 4, "linear").numpy()
    flow_psnr = np.mean([psnr(flow[i + 1], truth[i]) for i in range(3)])
    linear_psnr = np.mean([psnr(linear[i + 1], truth[i]) for i in range(3)])
    assert flow_psnr >= linear_psnr + 10


def test_flow_beats_linear_on_random_moving_shapes():
    gains = []
    for seed in range(4):
        video = render(random_clip(random.Random(seed), 9), 9).astype(np.float32) / 255
        kept = torch.from_numpy(video[::4].copy())
        flow = interpolate_frames(kept, 4, "dis").numpy()
        linear = interpolate_frames(kept, 4, "linear").numpy()
        between = [j for j in range(9) if j % 4]
        gains.append(psnr(flow[between], video[between]) - psnr(linear[between], video[between]))
    assert min(gains) > 3


def test_flow_node_reports_progress_per_pair_and_cancels(monkeypatch):
    calls = []

    class Cancelling:
        def __init__(self, total, description=""):
            calls.append(total)

        def update(self, count=1):
            calls.append("pair")
            raise InterruptedError("cancelled")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(interpolation_nodes, "Progress", Cancelling)
    with pytest.raises(InterruptedError):
        LongVideoFlowInterpolate().interpolate(torch.rand(4, 8, 8, 3), 2, "dis")
    assert calls == [3, "pair"]


@pytest.mark.parametrize(("images", "factor", "method", "message"), [
    (torch.rand(1, 8, 8, 3), 2, "dis", "at least 2"),
    (torch.rand(8, 8, 3), 2, "dis", r"IMAGE \[frames, height, width, 3\]"),
    (torch.rand(2, 8, 8, 3), 1, "dis", "factor must be at least 2"),
    (torch.rand(2, 8, 8, 3), 2, "raft", "method 'raft' is unknown"),
])
def test_flow_node_bad_inputs_are_clear_errors(images, factor, method, message):
    with pytest.raises(NodeInputError, match=message):
        LongVideoFlowInterpolate().interpolate(images, factor, method)


def test_flow_interpolation_at_a_larger_size_is_finite():
    frames = torch.rand(2, 72, 128, 3)
    out = interpolate_frames(frames, 3, "dis")
    assert torch.isfinite(out).all() and out.shape == (4, 72, 128, 3)
