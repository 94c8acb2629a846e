"""Models that take known frames through [noisy, mask, known] input channels ("mask" layout, the embedded model), and
co-denoising, the training-free long-video mode."""

import json
import shutil

import pytest
import torch

from longvideo.models.hint_unet import HintUNet3DDenoiser, MaskUNet3DDenoiser
from longvideo.models.loader import ModelLoadError, load_text_to_video
from longvideo.nodes.conditioning import LongVideoTextEncode
from longvideo.nodes.loaders import LongVideoModelLoader
from longvideo.sampling import co_denoise
from longvideo.sampling.continuation import ContinuationSettings, continue_video
from longvideo.sampling.denoise import TextGuidance
from longvideo.sampling.hierarchy import HierarchyPlan, HierarchySettings, level_prompts, sample_hierarchy
from longvideo.sampling.interpolation import InterpolationSettings, interpolate_latents
from longvideo.tools.train_tiny_model import (TrainConfig, known_frame_mask, known_frames_input, label_prompt, seam_weights,
                                             turning_batch, widen_for_known_frames)


@pytest.fixture(scope="module")
def mask_model_folder(tiny_model_folder, tmp_path_factory):
    """The tiny text-to-video folder with its UNet widened as the trainer widens it, then given random weights in the
    new channels (a trained model's are not zero)."""
    from diffusers import UNet3DConditionModel

    folder = tmp_path_factory.mktemp("models") / "tiny-mask"
    shutil.copytree(tiny_model_folder, folder)
    unet = widen_for_known_frames(UNet3DConditionModel.from_pretrained(str(folder / "unet")))
    with torch.no_grad():
        unet.conv_in.weight[:, 4:] = torch.randn(unet.conv_in.weight[:, 4:].shape, generator=torch.Generator().manual_seed(5))
    unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
    return str(folder)


@pytest.fixture(scope="module")
def mask_model(mask_model_folder):
    return LongVideoModelLoader().load(model="", dtype="fp32", model_path=mask_model_folder)


def guidance(clip, text="a red circle moving right"):
    encode = LongVideoTextEncode().encode
    positive, negative = encode(clip, text)[0], encode(clip, "")[0]
    return TextGuidance(positive[0][0], negative[0][0], 7.5)


def spy_inputs(monkeypatch, unet):
    inputs = []
    forward = type(unet).forward

    def spy(self, sample, *args, **kwargs):
        inputs.append(sample.clone())
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(type(unet), "forward", spy)
    return inputs


# --- the layout ------------------------------------------------------------------------------------------------------


def test_loader_tells_the_mask_layout_from_the_hint_layout(mask_model_folder, tmp_path):
    model = load_text_to_video(mask_model_folder)
    assert isinstance(model.denoiser, MaskUNet3DDenoiser)
    assert model.denoiser.takes_known_frames and not model.denoiser.requires_known_frames
    assert model.denoiser.latent_channels == 4 and model.denoiser.unet.config.in_channels == 9

    hint = tmp_path / "hint"
    shutil.copytree(mask_model_folder, hint)
    config = json.loads((hint / "unet" / "config.json").read_text())
    del config["known_frames_input"]          # lxj616's checkpoints say nothing: the hint layout
    (hint / "unet" / "config.json").write_text(json.dumps(config))
    assert type(load_text_to_video(str(hint)).denoiser) is HintUNet3DDenoiser

    config["known_frames_input"] = "sideways"
    (hint / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="known_frames_input 'sideways'.*'hint'.*'mask'"):
        load_text_to_video(str(hint))


def test_widening_keeps_the_plain_model_exactly(tiny_model_folder):
    """Zero-initialised new channels: before training the widened UNet computes what the plain one computed."""
    from diffusers import UNet3DConditionModel

    plain = UNet3DConditionModel.from_pretrained(tiny_model_folder, subfolder="unet").eval()
    widened = widen_for_known_frames(plain).eval()
    x = torch.randn(1, 4, 3, 4, 4)
    context = torch.randn(1, 3, plain.config.cross_attention_dim)
    mask = torch.zeros(1, 1, 3, 4, 4)
    mask[:, :, 0] = 1
    with torch.no_grad():
        expected = plain(x, 10, context).sample
        got = widened(known_frames_input(x, mask, torch.randn_like(x)), 10, context).sample
    assert torch.equal(got, expected)


def test_the_model_input_is_noisy_mask_and_known_latents(mask_model, monkeypatch):
    model, clip, _ = mask_model
    inputs = spy_inputs(monkeypatch, model.unet)
    start = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    settings = ContinuationSettings(5, 2, 2, 2, "learned")
    latents = continue_video(model, [guidance(clip)], settings, size=(1, 4, 4), steps=2, seed=0, scheduler="ddim", start=start)
    assert latents.shape == (1, 4, 2 + 3 + 3, 4, 4)
    assert torch.equal(latents[:, :, :2], start)
    assert len(inputs) == 4
    for sample in inputs:
        assert sample.shape == (2, 9, 5, 4, 4)                 # CFG batch, [noisy 4 | mask 1 | known 4], 5 frames
        assert torch.equal(sample[:, 4, :2], torch.ones(2, 2, 4, 4))
        assert torch.equal(sample[:, 4, 2:], torch.zeros(2, 3, 4, 4))
        assert torch.equal(sample[:, 5:, 2:], torch.zeros(2, 4, 3, 4, 4))
    assert torch.equal(inputs[0][:, 5:, :2], start.expand(2, -1, -1, -1, -1))
    assert torch.equal(inputs[2][:, 5:, :2], latents[:, :, 3:5].expand(2, -1, -1, -1, -1))


def test_without_known_frames_it_is_a_text_to_video_model(mask_model, monkeypatch):
    model, clip, _ = mask_model
    inputs = spy_inputs(monkeypatch, model.unet)
    model(torch.randn(2, 4, 3, 4, 4), torch.tensor(10), guidance(clip).context(1).expand(2, -1, -1))
    assert torch.equal(inputs[0][:, 4:], torch.zeros(2, 5, 3, 4, 4))


# --- learned keeps the known frames exact in every mode --------------------------------------------------------------


def test_learned_infill_keeps_the_parents_exact(mask_model):
    model, clip, _ = mask_model
    plan = HierarchyPlan(3, 2)
    text = guidance(clip)
    latents = sample_hierarchy(model, plan, level_prompts(plan, [text.positive]), text.negative, 7.5,
                               HierarchySettings(method="learned"), size=(4, 4), steps=2, seed=0, scheduler="ddim")
    keys = plan.level_frames(0)
    top = sample_hierarchy(model, HierarchyPlan(3, 1), level_prompts(HierarchyPlan(3, 1), [text.positive]), text.negative,
                           7.5, HierarchySettings(method="learned"), size=(4, 4), steps=2, seed=0, scheduler="ddim")
    assert latents.shape[2] == plan.frames and torch.equal(latents[:, :, keys], top)


def test_learned_interpolation_keeps_the_keyframes_exact(mask_model):
    model, clip, _ = mask_model
    keys = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    latents = interpolate_latents(model, guidance(clip), keys, InterpolationSettings(factor=4, method="learned"), steps=2,
                                  seed=0, scheduler="ddim")
    assert latents.shape[2] == 9 and torch.equal(latents[:, :, ::4], keys)


@pytest.mark.parametrize("scale", [3.0, 2.0])  # 3 = the infill CFG below (two model passes a step), 2 (three)
def test_frame_guidance_keeps_the_known_frames_exact_and_changes_the_new_ones(mask_model, scale):
    model, clip, _ = mask_model
    plan = HierarchyPlan(3, 2)
    text = guidance(clip)

    def infill(frame_guidance):
        settings = HierarchySettings(method="learned", infill_cfg=3.0, frame_guidance=frame_guidance)
        return sample_hierarchy(model, plan, level_prompts(plan, [text.positive]), text.negative, 7.5, settings,
                                size=(4, 4), steps=2, seed=0, scheduler="ddim")

    plain, guided = infill(1.0), infill(scale)
    keys = plan.level_frames(0)
    assert torch.equal(guided[:, :, keys], plain[:, :, keys])   # the keyframe level runs without known frames
    assert not torch.allclose(guided, plain)
    keyframes = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    settings = InterpolationSettings(factor=4, method="learned", frame_guidance=scale)
    latents = interpolate_latents(model, guidance(clip), keyframes, settings, steps=2, seed=0, scheduler="ddim")
    assert torch.equal(latents[:, :, ::4], keyframes)


def test_training_patterns_cover_every_mode():
    generator = torch.Generator().manual_seed(0)
    masks = [known_frame_mask(16, generator) for _ in range(400)]
    none = sum(not m.any() for m in masks)
    first = sum(bool(m.any()) and torch.equal(m, torch.cat([torch.ones(int(m.sum())), torch.zeros(16 - int(m.sum()))]))
                for m in masks)
    ends = sum(bool(m[0] and m[-1] and not m[2:-2].any()) for m in masks)
    strided = sum(int(m.sum()) >= 3 and len({b - a for a, b in zip(m.nonzero()[:-1, 0].tolist(), m.nonzero()[1:, 0].tolist())}) == 1
                  for m in masks)
    assert min(none, first, ends, strided) > 40
    assert all(not m.all() for m in masks if m.sum() < 16)
    slow = [known_frame_mask(16, generator, infill_only=True) for _ in range(200)]
    assert all(m.any() and not (m[0] and not m[1:].any()) for m in slow)  # never text to video or a continuation start


def test_a_turning_batch_knows_the_frames_before_the_turn_and_prompts_the_new_direction():
    # labels: shape, colour, direction after the turn, turn frame
    labels = torch.tensor([[0, 0, 1, 3], [2, 3, 0, 6]])
    latents = torch.randn(2, 4, 16, 8, 8)
    config = TrainConfig(unet_batch=64, drop_prompt=0.0)
    clean, prompts, known = turning_batch((latents, labels), 2.0, config, torch.Generator().manual_seed(0))
    for item, prompt, mask in zip(clean, prompts, known):
        source = next(i for i in range(2) if torch.equal(item, 2.0 * latents[i]))
        assert mask.tolist() == [1.0] * int(labels[source, 3]) + [0.0] * (16 - int(labels[source, 3]))
        assert prompt == label_prompt(labels[source, :3].tolist(), reverse=False)
    assert {p.split()[-1] for p in prompts} == {"right", "left"}  # DIRECTIONS order: left, right, up, down


def test_frames_beside_known_frames_weigh_more_in_the_loss():
    known = torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0, 0, 1]).view(1, 1, -1, 1, 1)
    weights = seam_weights(known, 3.0).flatten().tolist()
    assert weights == [1, 3, 1, 3, 1, 3, 1, 1, 3, 1]
    assert torch.equal(seam_weights(torch.zeros(1, 1, 5, 1, 1), 3.0), torch.ones(1, 1, 5, 1, 1))


# --- co-denoising ------------------------------------------------------------------------------------------------------


class Recording:
    """Wraps a Denoiser and records where each call's latents were and how many frames they had."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, latents, timestep, context, known=None):
        self.calls.append((latents.shape[2], context.clone(), known))
        return self.inner(latents, timestep, context, known=known)


def test_co_denoising_runs_the_model_on_windows_only_with_prompts_along_the_timeline(mask_model):
    model, clip, _ = mask_model
    recording = Recording(model)
    prompts = [guidance(clip, "a red circle moving right"), guidance(clip, "a red circle moving down")]
    settings = co_denoise.CoDenoiseSettings(frames=20, frames_per_window=8, overlap=4, layout_share=0.0)
    latents = co_denoise.co_denoise_video(recording, prompts, settings, size=(1, 4, 4), steps=2, seed=0)
    assert latents.shape == (1, 4, 20, 4, 4) and latents.device.type == "cpu"
    windows = co_denoise.windows_per_step(settings)
    assert windows == 4 and len(recording.calls) == 2 * windows
    assert {frames for frames, _, _ in recording.calls} == {8}
    contexts = [context for _, context, _ in recording.calls[:windows]]
    assert torch.equal(contexts[0], prompts[0].context(1)) and torch.equal(contexts[-1], prompts[1].context(1))


def test_co_denoising_memory_does_not_grow_with_length(mask_model):
    """The model sees one window at a time whatever the length: the largest model input is the same for 24 and 200
    frames (the activations, the memory that grows, are those of one window)."""
    model, clip, _ = mask_model
    largest = []
    for frames in (24, 200):
        recording = Recording(model)
        co_denoise.co_denoise_video(recording, [guidance(clip)], co_denoise.CoDenoiseSettings(frames, 8, 4),
                                    size=(1, 4, 4), steps=1, seed=0)
        largest.append(max(f for f, _, _ in recording.calls))
    assert largest == [8, 8]


def test_layout_steps_run_one_spread_window_then_the_windows(mask_model):
    """layout_share 0.5 of 4 steps: the first 2 steps run the model once on the 8 layout frames with the prompt of the
    video's middle, the last 2 on the ordinary windows; no call sees more than a window's frames."""
    model, clip, _ = mask_model
    recording = Recording(model)
    prompts = [guidance(clip, "a red circle moving right"), guidance(clip, "a red circle moving down"),
               guidance(clip, "a red circle moving left")]
    settings = co_denoise.CoDenoiseSettings(frames=40, frames_per_window=8, overlap=4, layout_share=0.5)
    latents = co_denoise.co_denoise_video(recording, prompts, settings, size=(1, 4, 4), steps=4, seed=0, scheduler="dpmpp_2m")
    assert latents.shape == (1, 4, 40, 4, 4)
    windows = co_denoise.windows_per_step(settings)
    assert len(recording.calls) == 2 + 2 * windows
    assert {frames for frames, _, _ in recording.calls} == {8}
    for _, context, _ in recording.calls[:2]:
        assert torch.equal(context, prompts[1].context(1))
    assert not torch.equal(recording.calls[2][1], prompts[1].context(1))
    assert co_denoise.layout_frames(40, 8) == [0, 6, 11, 17, 22, 28, 33, 39]
    assert co_denoise.layout_frames(5, 8) == [0, 1, 2, 3, 4]


class Affine(co_denoise.Denoiser):
    """A stand-in model whose epsilon prediction depends on its input, the frame and the prompt."""

    latent_channels, scheduler_config, downscale = 2, {"prediction_type": "epsilon"}, 8

    def load(self):
        return torch.device("cpu")

    def __call__(self, latents, timestep, context, known=None):
        return 0.5 * latents + context.mean() * torch.arange(latents.shape[2]).view(1, 1, -1, 1, 1)


def test_layout_window_mixes_the_layout_frames_clean_estimates_along_time():
    """Layout frames keep the model's prediction; every other frame's clean estimate is the linear mix of those of the
    layout frames around it; below `until` the ordinary windows predict."""
    from longvideo.sampling.context_windows import WindowedDenoiser
    from longvideo.sampling.denoise import clean_estimate

    context = torch.full((1, 3, 4), -2.0)
    windows = WindowedDenoiser(Affine(), 8, 4, latents_on_cpu=True)
    alpha = torch.tensor(0.6)
    layout = co_denoise.LayoutWindow(windows, context, until=500.0, alpha_of=lambda t: alpha)
    latents = torch.randn(1, 2, 20, 3, 3, generator=torch.Generator().manual_seed(0))
    prediction = layout(latents, torch.tensor(700.0), torch.zeros(1, 3, 4))
    frames = co_denoise.layout_frames(20, 8)
    assert frames == [0, 3, 5, 8, 11, 14, 16, 19]
    clean = clean_estimate(prediction, latents, alpha, "epsilon")
    x = latents[:, :, frames]
    torch.testing.assert_close(clean[:, :, frames], clean_estimate(Affine()(x, None, context), x, alpha, "epsilon"))
    torch.testing.assert_close(clean[:, :, 4], (clean[:, :, 3] + clean[:, :, 5]) / 2)
    torch.testing.assert_close(clean[:, :, 9], (2 * clean[:, :, 8] + clean[:, :, 11]) / 3)
    assert torch.equal(layout(latents, torch.tensor(400.0), context), windows(latents, torch.tensor(400.0), context))


@pytest.mark.parametrize("method", ["replace", "learned"])
@pytest.mark.parametrize("layout_share", [0.0, 0.5])
def test_co_denoising_keeps_a_start_clip_exact(mask_model, method, layout_share):
    model, clip, _ = mask_model
    start = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    settings = co_denoise.CoDenoiseSettings(frames=14, frames_per_window=8, overlap=4, method=method,
                                            layout_share=layout_share)
    latents = co_denoise.co_denoise_video(model, [guidance(clip)], settings, size=(1, 4, 4), steps=2, seed=0, start=start)
    assert torch.equal(latents[:, :, :3], start)


def test_rescheduled_noise_reuses_the_first_window():
    noise = co_denoise.rescheduled_noise((1, 2, 30, 3, 3), window=8, stride=4, seed=0)
    assert noise.shape == (1, 2, 30, 3, 3)
    first = [noise[:, :, t] for t in range(8)]
    for t in range(8, 30):
        assert any(torch.equal(noise[:, :, t], f) for f in first)
    assert torch.equal(noise, co_denoise.rescheduled_noise((1, 2, 30, 3, 3), window=8, stride=4, seed=0))


@pytest.mark.parametrize("change, message", [
    ({"overlap": 8}, "overlap must be between 0 and frames_per_window - 1"),
    ({"noise": "pink"}, "noise 'pink' is unknown"),
    ({"method": "guidance"}, "method 'guidance' is unknown for co-denoising"),
    ({"frames": 0}, "frames must be at least 1"),
    ({"layout_share": 1.5}, "layout_share must be between 0 and 1"),
])
def test_co_denoising_settings_are_checked(change, message):
    settings = co_denoise.CoDenoiseSettings(**{"frames": 20, "frames_per_window": 8, "overlap": 4, **change})
    with pytest.raises(ValueError, match=message):
        settings.check()


def test_co_denoise_node_continues_a_start_latent_with_prompts_along_the_timeline(mask_model):
    from longvideo.nodes.co_denoise import LongVideoCoDenoiseSampler
    from longvideo.nodes.common import NodeInputError
    from longvideo.nodes.continuation import LongVideoPromptSchedule

    model, clip, _ = mask_model
    encode = LongVideoTextEncode().encode
    positive, negative = encode(clip, "a red circle moving right")[0], encode(clip, "")[0]
    schedule = LongVideoPromptSchedule().encode(clip, "a red circle moving right\na red circle moving down")[0]
    start = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    node = LongVideoCoDenoiseSampler()
    arguments = dict(width=32, height=32, frames=12, frames_per_window=6, overlap=3, noise="freenoise", seed=1, steps=2,
                     cfg=7.5, scheduler="ddim")
    out = node.sample(model, positive, negative, prompt_schedule=schedule, start_latent={"samples": start}, method="learned",
                      **arguments)[0]["samples"]
    assert out.shape == (1, 4, 12, 4, 4) and torch.equal(out[:, :, :2], start)
    with pytest.raises(NodeInputError, match="overlap must be between 0 and frames_per_window - 1"):
        node.sample(model, positive, negative, **{**arguments, "overlap": 6})
    with pytest.raises(NodeInputError, match="set frames above that"):
        node.sample(model, positive, negative, start_latent={"samples": start}, **{**arguments, "frames": 2})
    with pytest.raises(NodeInputError, match="layout_share must be between 0 and 1"):
        node.sample(model, positive, negative, layout_share=1.5, **arguments)
    with pytest.raises(NodeInputError, match="window positions 'absolute' set a window's rotary frame positions, which "
                                             "the pack's UNet3D models do not have"):
        node.sample(model, positive, negative, positions="absolute", **arguments)
