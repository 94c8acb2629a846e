"""Co-denoising on ComfyUI's own models: the windows run inside ComfyUI's sampling (a context handler), against the
real ComfyUI; over ranks too."""

import os

import pytest
import torch

import comfy_env

pytestmark = pytest.mark.usefixtures("comfyui_session")

CFG = 4.0


@pytest.fixture(scope="module")
def wan21(tmp_path_factory):
    comfy_env.comfyui_or_skip()
    import comfy.sd

    path = comfy_env.save_tiny_wan21(str(tmp_path_factory.mktemp("co_denoise") / "tiny_wan21.safetensors"))
    with torch.inference_mode():
        return comfy.sd.load_diffusion_model(path)


def text(seed, tokens=5):
    return [[torch.randn(1, tokens, 4096, generator=torch.Generator().manual_seed(seed)), {}]]


def co_denoised(model, frames, positive=None, schedule=None, **options):
    from longvideo.nodes.co_denoise import LongVideoCoDenoiseSampler
    from longvideo.nodes.comfy_models import FROM_NODE, LongVideoComfyModel

    settings = dict(frames_per_window=5, overlap=2, noise="freenoise", seed=3, steps=4, cfg=CFG, scheduler="euler")
    with torch.inference_mode():
        adapted = LongVideoComfyModel().adapt(model, "simple", FROM_NODE)[0]
        (latent,) = LongVideoCoDenoiseSampler().sample(adapted, positive or text(1), text(9), 16, 16, frames,
                                                       prompt_schedule=schedule, **{**settings, **options})
    return latent["samples"]


def test_one_window_over_the_whole_video_is_comfyuis_ksampler(wan21):
    import comfy.sample

    ours = co_denoised(wan21, 5, noise="independent")
    zeros = torch.zeros(1, 16, 5, 2, 2)
    theirs = comfy.sample.sample(wan21, comfy.sample.prepare_noise(zeros, 3), 4, CFG, "euler", "simple", text(1), text(9),
                                 zeros, disable_pbar=True, seed=3)
    assert torch.isfinite(ours).all() and ours.abs().mean() > 0.1
    assert (ours - theirs).abs().max() <= 1e-4


def test_windows_take_their_prompts_along_the_timeline(wan21, caplog):
    """Windows over 12 frames with two prompts; swapping the prompts changes the video, the first half most."""
    one_prompt = co_denoised(wan21, 12, schedule=[text(1), text(1)])
    assert one_prompt.shape == (1, 16, 12, 2, 2) and torch.isfinite(one_prompt).all()
    assert (co_denoised(wan21, 12) - one_prompt).abs().max() <= 1e-5  # one line on the schedule = the positive
    two = co_denoised(wan21, 12, schedule=[text(1), text(2)])
    swapped = co_denoised(wan21, 12, schedule=[text(2), text(1)])
    assert (two - one_prompt).abs().max() > 1e-3 and (two - swapped).abs().max() > 1e-3
    # A prompt whose token count differs from the others' (each window's entries are its own).
    assert torch.isfinite(co_denoised(wan21, 12, schedule=[text(1), text(2, tokens=9)])).all()


def test_absolute_positions_change_nothing_on_rotary_positions(wan21):
    """Wan's rotary frame positions depend only on frame differences: a window's offset leaves its attention as it
    was (the measured difference is float rounding)."""
    relative = co_denoised(wan21, 12, positions="relative")
    absolute = co_denoised(wan21, 12, positions="absolute")
    assert 0 < (absolute - relative).abs().max() <= 1e-4


def test_absolute_positions_are_refused_where_frame_positions_cannot_move(tmp_path):
    import comfy.sd

    from longvideo.nodes.common import NodeInputError

    path = comfy_env.save_tiny_hunyuan_video(str(tmp_path / "tiny_hunyuan.safetensors"))
    with torch.inference_mode():
        model = comfy.sd.load_diffusion_model(path)
    with pytest.raises(NodeInputError, match="LongVideoCoDenoiseSampler: window positions 'absolute' set a window's "
                                             r"rotary frame positions, which HunyuanVideo \(16 input channels\) does not"):
        co_denoised(model, 12, positions="absolute")
    with pytest.raises(NodeInputError, match="positions 'bottom' is unknown"):
        co_denoised(model, 12, positions="bottom")


@pytest.mark.parametrize("ranks", [2, 3])
def test_co_denoised_windows_of_a_comfyui_model_over_ranks_equal_one_process(wan21, ranks, monkeypatch):
    monkeypatch.setenv("LONGVIDEO_RANK_SETUP", os.path.join(os.path.dirname(os.path.abspath(__file__)), "rank_setup.py"))
    one = co_denoised(wan21, 12, schedule=[text(1), text(2)])
    split = co_denoised(wan21, 12, schedule=[text(1), text(2)], devices=", ".join(["cpu"] * ranks))
    assert (split - one).abs().max() <= 1e-5
