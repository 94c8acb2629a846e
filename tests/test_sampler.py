import pytest
import torch
from diffusers import TextToVideoSDPipeline, VideoToVideoSDPipeline

from longvideo.nodes.conditioning import LongVideoTextEncode
from longvideo.nodes.common import NodeInputError
from longvideo.nodes.latents import LongVideoEmptyLatent
from longvideo.nodes.loaders import LongVideoModelLoader
from longvideo.nodes.sampler import LongVideoSampler
from longvideo.sampling.denoise import TextGuidance, denoise
from longvideo.sampling.schedulers import SCHEDULER_NAMES, make_scheduler

PROMPT = "a red circle moving right"
NEGATIVE = "blurry"


@pytest.fixture(scope="module")
def tiny(tiny_model_folder):
    return LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder)


def encode(clip, text):
    return LongVideoTextEncode().encode(clip, text)[0]


def pipeline_for(tiny, scheduler, pipeline_class=TextToVideoSDPipeline):
    model, clip, vae = tiny
    return pipeline_class(
        vae=vae.vae, text_encoder=clip.text_model, tokenizer=clip.tokenizer, unet=model.unet,
        scheduler=make_scheduler(scheduler, model.scheduler_config),
    )


def sample(tiny, latent, scheduler, denoise=1.0, seed=42, steps=10, cfg=7.5):
    model, clip, _ = tiny
    node = LongVideoSampler()
    return node.sample(model, encode(clip, PROMPT), encode(clip, NEGATIVE), latent, seed, steps, cfg, scheduler, denoise)[0]["samples"]


@pytest.mark.parametrize("scheduler", ["ddim", "dpmpp_2m"])
def test_sampler_matches_diffusers_text_to_video(tiny, scheduler):
    latent = LongVideoEmptyLatent().generate(width=64, height=48, frames=8, batch_size=1)[0]
    ours = sample(tiny, latent, scheduler)
    reference = pipeline_for(tiny, scheduler)(
        PROMPT, negative_prompt=NEGATIVE, num_inference_steps=10, guidance_scale=7.5, height=48, width=64,
        num_frames=8, generator=torch.Generator("cpu").manual_seed(42), output_type="latent",
    ).frames
    assert ours.shape == reference.shape == (1, 4, 8, 6, 8)
    assert (ours - reference).abs().max().item() <= 1e-4


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_every_scheduler_matches_diffusers(tiny, scheduler):
    model, clip, _ = tiny
    positive, _ = clip.encode([PROMPT])
    negative, _ = clip.encode([""])
    ours = denoise(model, TextGuidance(positive, negative, 5.0), (2, 4, 5, 4, 4), steps=6, seed=7, scheduler=scheduler)
    reference = pipeline_for(tiny, scheduler)(
        [PROMPT, PROMPT], num_inference_steps=6, guidance_scale=5.0, height=32, width=32, num_frames=5, generator=torch.Generator("cpu").manual_seed(7), output_type="latent",
    ).frames
    assert (ours - reference).abs().max().item() <= 1e-4


def test_denoise_below_one_matches_diffusers_video_to_video(tiny):
    model, clip, vae = tiny
    start = torch.randn((1, 4, 6, 4, 4), generator=torch.Generator().manual_seed(3))
    ours = sample(tiny, {"samples": start}, "ddim", denoise=0.6, seed=11)
    pipeline = pipeline_for(tiny, "ddim", VideoToVideoSDPipeline)
    pipeline.prepare_latents = lambda video, timestep, batch_size, dtype, device, generator=None: pipeline.scheduler.add_noise(
        start, torch.randn(start.shape, generator=generator, dtype=dtype), timestep
    )
    reference = pipeline(
        PROMPT, video=torch.zeros(1, 6, 3, 32, 32), negative_prompt=NEGATIVE, strength=0.6, num_inference_steps=10,
        guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(11), output_type="latent",
    ).frames
    assert (ours - reference).abs().max().item() <= 1e-4


def test_same_seed_same_video_other_seed_other_video(tiny):
    latent = LongVideoEmptyLatent().generate(width=32, height=32, frames=4, batch_size=1)[0]
    first = sample(tiny, latent, "euler_ancestral", seed=5, steps=4)
    assert torch.equal(first, sample(tiny, latent, "euler_ancestral", seed=5, steps=4))
    assert not torch.equal(first, sample(tiny, latent, "euler_ancestral", seed=6, steps=4))


def test_progress_counts_every_step(tiny, monkeypatch):
    from longvideo.utils import comfy

    updates = []
    monkeypatch.setattr(comfy.Progress, "update", lambda self, count=1: updates.append(count))
    latent = LongVideoEmptyLatent().generate(width=32, height=32, frames=3, batch_size=1)[0]
    sample(tiny, latent, "ddim", steps=8)
    assert len(updates) == 8
    updates.clear()
    sample(tiny, {"samples": torch.zeros(1, 4, 3, 4, 4)}, "ddim", steps=8, denoise=0.5)
    assert len(updates) == 4


def test_cancel_stops_between_steps(tiny, monkeypatch):
    from longvideo.utils import comfy

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("cancelled")

    monkeypatch.setattr(comfy, "throw_if_interrupted", interrupt)
    latent = LongVideoEmptyLatent().generate(width=32, height=32, frames=3, batch_size=1)[0]
    with pytest.raises(KeyboardInterrupt):
        sample(tiny, latent, "ddim", steps=8)
    assert len(calls) == 3


def test_unknown_scheduler_is_named(tiny):
    latent = LongVideoEmptyLatent().generate(width=32, height=32, frames=2, batch_size=1)[0]
    with pytest.raises(ValueError, match="scheduler 'heun' is unknown"):
        sample(tiny, latent, "heun", steps=2)


def test_conditioning_of_another_width_is_rejected(tiny):
    model, clip, _ = tiny
    latent = LongVideoEmptyLatent().generate(width=32, height=32, frames=2, batch_size=1)[0]
    wide = [[torch.zeros(1, 77, 1024), {}]]
    with pytest.raises(NodeInputError, match="'positive' has embeddings of shape \\(1, 77, 1024\\).*width 32"):
        LongVideoSampler().sample(model, wide, encode(clip, ""), latent, 0, 2, 7.5, "ddim", 1.0)


def test_conditioning_of_other_token_counts_uses_batched_guidance(tiny):
    """A 154-token prompt (ComfyUI's long-prompt format) against a 77-token negative equals 77 vs 77."""
    model, clip, _ = tiny
    positive, negative = encode(clip, PROMPT), encode(clip, NEGATIVE)
    doubled = [[torch.cat([positive[0][0]] * 2, dim=1), {}]]
    latent = LongVideoEmptyLatent().generate(width=32, height=32, frames=3, batch_size=1)[0]
    plain = LongVideoSampler().sample(model, positive, negative, latent, 1, 3, 7.5, "ddim", 1.0)[0]["samples"]
    long = LongVideoSampler().sample(model, doubled, negative, latent, 1, 3, 7.5, "ddim", 1.0)[0]["samples"]
    # float32 batching noise only (about 1e-5 on latents of unit scale, CPU dependent); other guidance differs by far more
    torch.testing.assert_close(long, plain, rtol=1e-5, atol=1e-5)


def test_latent_with_wrong_channels_is_rejected(tiny):
    model, clip, _ = tiny
    with pytest.raises(NodeInputError, match="'latent_image' has 16 channels but the model works on 4"):
        LongVideoSampler().sample(model, encode(clip, ""), encode(clip, ""), {"samples": torch.zeros(1, 16, 2, 4, 4)}, 0, 2, 7.5, "ddim", 1.0)
