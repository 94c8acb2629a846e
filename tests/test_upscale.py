"""Latent upscaling (interpolation and the diffusers latent upscaler), windowed refine, attention backend, VAE scale."""

import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionLatentUpscalePipeline

from longvideo.models.denoiser import Denoiser, KnownFrames
from longvideo.models.loader import ModelLoadError, load_text_to_video
from longvideo.nodes.common import NodeInputError
from longvideo.nodes.conditioning import LongVideoTextEncode
from longvideo.nodes.context_windows import LongVideoContextWindows
from longvideo.nodes.loaders import LongVideoModelLoader
from longvideo.nodes.sampler import LongVideoSampler
from longvideo.nodes.upscale import LongVideoLatentUpscale, LongVideoLatentUpscaleModelLoader
from longvideo.sampling.context_windows import WindowedDenoiser, window_starts
from longvideo.sampling.latent_upscale import INTERPOLATION_METHODS

PROMPT = "a red circle moving right"


def save_tiny_latent_upscaler(folder: str, seed: int = 0) -> str:
    """A tiny random StableDiffusionLatentUpscalePipeline folder (sd-x2-latent-upscaler's architecture, a few MB)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from tiny_models import tiny_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    text_width = 32
    unet = UNet2DConditionModel(
        act_fn="gelu", attention_head_dim=8, norm_num_groups=None, block_out_channels=[32, 32, 64, 64],
        time_cond_proj_dim=128 + text_width, conv_in_kernel=1, conv_out_kernel=1, cross_attention_dim=text_width,
        down_block_types=("KDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D"),
        up_block_types=("KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KUpBlock2D"),
        in_channels=8, out_channels=5, mid_block_type=None, only_cross_attention=False,
        resnet_time_scale_shift="scale_shift", time_embedding_type="fourier", timestep_post_act="gelu",
    )
    vae = AutoencoderKL(block_out_channels=[8] * 4, down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, norm_num_groups=4)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=text_width, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer),
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    pipeline = StableDiffusionLatentUpscalePipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
        scheduler=EulerDiscreteScheduler(prediction_type="sample"),
    )
    pipeline.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def upscaler_folder(tmp_path_factory):
    return save_tiny_latent_upscaler(str(tmp_path_factory.mktemp("models") / "tiny-latent-upscaler"))


@pytest.fixture(scope="module")
def upscaler(upscaler_folder):
    return LongVideoLatentUpscaleModelLoader().load(model="", dtype="fp32", model_path=upscaler_folder)[0]


@pytest.fixture(scope="module")
def tiny(tiny_model_folder):
    return LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder)


def upscale(samples, method="bilinear", scale_by=2.0, width=0, height=0, frames_per_batch=16, **model_inputs):
    return LongVideoLatentUpscale().upscale({"samples": samples}, method, scale_by, width, height, frames_per_batch, **model_inputs)[0]["samples"]


# --- interpolation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", INTERPOLATION_METHODS)
def test_interpolation_shapes_and_dtype(method, dtype):
    latents = torch.randn(2, 4, 5, 6, 8).to(dtype)
    assert upscale(latents, method).shape == (2, 4, 5, 12, 16)
    assert upscale(latents, method, scale_by=1.5).shape == (2, 4, 5, 9, 12)
    assert upscale(latents, method, width=96, height=64).shape == (2, 4, 5, 8, 12)
    assert upscale(latents, method, width=128).shape == (2, 4, 5, 12, 16)  # height follows the aspect ratio
    assert upscale(latents, method).dtype == dtype


@pytest.mark.parametrize("method", INTERPOLATION_METHODS)
def test_interpolation_of_a_constant_latent_stays_constant(method):
    latents = torch.tensor([0.5, -1.25, 2.0, 0.0]).view(1, 4, 1, 1, 1).expand(1, 4, 3, 6, 8).contiguous()
    upscaled = upscale(latents, method, scale_by=2.5)
    assert upscaled.shape == (1, 4, 3, 15, 20)
    assert torch.allclose(upscaled, latents[..., :1, :1].expand_as(upscaled), atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", INTERPOLATION_METHODS)
def test_interpolation_is_per_frame_and_independent_of_the_batch_size(method):
    latents = torch.randn(2, 4, 7, 6, 8)
    options = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    for b in range(2):
        for t in range(7):
            expected = F.interpolate(latents[b, :, t][None], size=(12, 16), mode=method, **options)[0]
            assert torch.equal(upscale(latents, method, frames_per_batch=3)[b, :, t], expected)
    assert torch.equal(upscale(latents, method, frames_per_batch=1), upscale(latents, method, frames_per_batch=14))


def test_upscale_input_errors(upscaler):
    latents = torch.randn(1, 4, 3, 8, 8)
    with pytest.raises(NodeInputError, match="width 100 is not a multiple of 8"):
        upscale(latents, width=100)
    with pytest.raises(NodeInputError, match="needs an upscale_model"):
        upscale(latents, "model")
    with pytest.raises(NodeInputError, match="doubles height and width.*scale_by 2"):
        upscale(latents, "model", scale_by=3.0, upscale_model=upscaler)
    with pytest.raises(NodeInputError, match="has 3 channels but the upscaler works on 4"):
        upscale(torch.randn(1, 3, 3, 8, 8), "model", upscale_model=upscaler)
    with pytest.raises(NodeInputError, match="video LATENT"):
        upscale(torch.randn(4, 8, 8), "bilinear")


# --- the latent upscaler model ---------------------------------------------------------------------


def pipeline_reference(upscaler_folder, latents, frames_per_batch, steps, seed, prompt, negative, guidance):
    """ContinuitySeq's --upscale: the diffusers pipeline on groups of frames, the prompt repeated per frame,
    the already-scaled latents as image, output_type="latent"; fed the noise our node draws (one CPU generator,
    frame by frame)."""
    pipeline = StableDiffusionLatentUpscalePipeline.from_pretrained(upscaler_folder)
    pipeline.set_progress_bar_config(disable=True)
    batch, channels, frames, height, width = latents.shape
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = torch.stack([torch.randn((channels, 2 * height, 2 * width), generator=generator) for _ in range(batch * frames)])
    images = latents.transpose(1, 2).reshape(batch * frames, channels, height, width)
    outputs = []
    for start in range(0, batch * frames, frames_per_batch):
        group = images[start : start + frames_per_batch]
        outputs.append(pipeline(
            prompt=[prompt] * len(group), negative_prompt=[negative] * len(group), image=group, num_inference_steps=steps,
            guidance_scale=guidance, latents=noise[start : start + len(group)], output_type="latent",
        ).images)
    return torch.cat(outputs).reshape(batch, frames, channels, 2 * height, 2 * width).transpose(1, 2)


@pytest.mark.parametrize("guidance", [0.0, 4.0])
def test_model_upscale_equals_the_diffusers_pipeline(upscaler, upscaler_folder, guidance):
    latents = torch.randn(1, 4, 5, 8, 8, generator=torch.Generator().manual_seed(3))
    ours = upscale(latents, "model", frames_per_batch=2, upscale_model=upscaler, prompt=PROMPT, negative_prompt="blurry",
                   steps=3, guidance_scale=guidance, seed=11)
    reference = pipeline_reference(upscaler_folder, latents, 2, 3, 11, PROMPT, "blurry", guidance)
    assert ours.shape == reference.shape == (1, 4, 5, 16, 16)
    assert ours.dtype == torch.float32
    assert (ours - reference).abs().max().item() <= 1e-5


def test_model_batch_size_bounds_the_model_input_but_not_the_result(upscaler):
    latents = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    largest = []
    hook = upscaler.unet.register_forward_pre_hook(lambda _, args: largest.append(args[0].numel() * args[0].element_size()))
    results = {}
    peaks = {}
    try:
        for frames_per_batch in (1, 2, 6):
            largest.clear()
            results[frames_per_batch] = upscale(latents, "model", frames_per_batch=frames_per_batch, upscale_model=upscaler,
                                                prompt=PROMPT, steps=2, guidance_scale=3.0, seed=1)
            peaks[frames_per_batch] = max(largest)
    finally:
        hook.remove()
    frame_input = 2 * 8 * 16 * 16 * 4  # CFG halves x (noisy + low-resolution channels) x 16 x 16 x float32
    assert peaks == {1: frame_input, 2: 2 * frame_input, 6: 6 * frame_input}
    # Equal up to float32 kernels that sum in a batch-dependent order (diffusers' own batch test allows 1e-4).
    assert torch.allclose(results[1], results[6], atol=2e-4, rtol=0)
    assert torch.allclose(results[2], results[6], atol=2e-4, rtol=0)
    assert not torch.equal(results[1][:, :, 0], results[1][:, :, 1])  # every frame has its own noise


def test_upscaler_loader_errors(tiny_model_folder, tmp_path):
    loader = LongVideoLatentUpscaleModelLoader()
    with pytest.raises(ModelLoadError, match="StableDiffusionLatentUpscalePipeline"):
        loader.load(model="", dtype="fp32", model_path=tiny_model_folder)
    with pytest.raises(NodeInputError, match="was not found"):
        loader.load(model="no-such-upscaler", dtype="fp32")
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelLoadError, match="no text_encoder/ subfolder"):
        loader.load(model="", dtype="fp32", model_path=str(tmp_path))


def test_upscaler_is_found_by_name(upscaler_folder, monkeypatch):
    monkeypatch.setenv("LONGVIDEO_MODELS_DIR", os.path.dirname(upscaler_folder))
    name = os.path.basename(upscaler_folder)
    assert name in LongVideoLatentUpscaleModelLoader.INPUT_TYPES()["required"]["model"][0]
    assert LongVideoLatentUpscaleModelLoader().load(model=name, dtype="fp32")[0].latent_channels == 4


# --- refine window by window -----------------------------------------------------------------------


def refine(model, clip, latents, denoise=0.5, steps=4, seed=3):
    positive = LongVideoTextEncode().encode(clip, PROMPT)[0]
    negative = LongVideoTextEncode().encode(clip, "")[0]
    return LongVideoSampler().sample(model, positive, negative, {"samples": latents}, seed, steps, 7.5, "ddim", denoise)[0]["samples"]


def largest_unet_input(model):
    """A list that receives the frame count of every latent tensor handed to the UNet, and the hook's handle."""
    frames = []
    return frames, model.unet.register_forward_pre_hook(lambda _, args: frames.append(args[0].shape[2]))


def test_refine_of_a_64_frame_upscaled_latent_keeps_the_model_input_bounded(tiny):
    model, clip, _ = tiny
    small = torch.randn(1, 4, 64, 4, 4, generator=torch.Generator().manual_seed(0))
    upscaled = upscale(small, "bilinear")
    windowed = LongVideoContextWindows().patch(model, frames_per_window=16, overlap=4)[0]
    frames, hook = largest_unet_input(model)
    try:
        refined = refine(windowed, clip, upscaled)
        windowed_calls = list(frames)
        frames.clear()
        refine(model, clip, upscaled, steps=2)
    finally:
        hook.remove()
    assert refined.shape == (1, 4, 64, 8, 8) and torch.isfinite(refined).all()
    assert max(windowed_calls) == 16 and len(windowed_calls) == 2 * 5  # 2 steps at denoise 0.5, 5 windows per step
    assert max(frames) == 64  # without windows the model takes the whole video


def test_windows_covering_the_video_change_nothing(tiny):
    model, clip, _ = tiny
    latents = torch.randn(1, 4, 12, 8, 8, generator=torch.Generator().manual_seed(1))
    windowed = LongVideoContextWindows().patch(model, frames_per_window=12, overlap=4)[0]
    assert torch.equal(refine(windowed, clip, latents), refine(model, clip, latents))


class PerFrame(Denoiser):
    """A model whose prediction for a frame depends on that frame only (and on known frames, which it copies)."""

    latent_channels = 4
    scheduler_config = {}
    takes_known_frames = True

    def __init__(self):
        self.calls = []

    def load(self):
        return torch.device("cpu")

    def __call__(self, latents, timestep, context, known=None):
        self.calls.append(latents.shape[2])
        prediction = latents * 2 + 1
        if known is not None:
            prediction[:, :, known.indices] = known.latents
        return prediction


@pytest.mark.parametrize("frames,window,overlap", [(37, 16, 4), (64, 16, 8), (20, 7, 0), (10, 4, 3)])
def test_blending_is_exact_for_a_frame_wise_model(frames, window, overlap):
    latents = torch.randn(2, 4, frames, 3, 3)
    known = KnownFrames([0, frames // 2, frames - 1], torch.randn(2, 4, 3, 3, 3))
    inner = PerFrame()
    prediction = WindowedDenoiser(inner, window, overlap)(latents, torch.tensor(500), None, known=known)
    expected = latents * 2 + 1
    expected[:, :, known.indices] = known.latents
    assert torch.allclose(prediction, expected, atol=1e-6)
    assert max(inner.calls) == window and len(inner.calls) == len(window_starts(frames, window, overlap))


@pytest.mark.parametrize("frames,window,overlap", [(64, 16, 4), (17, 16, 4), (100, 24, 8), (5, 16, 4), (30, 1, 0)])
def test_windows_cover_every_frame_with_the_overlap(frames, window, overlap):
    starts = window_starts(frames, window, overlap)
    covered = torch.zeros(frames, dtype=torch.int)
    for start in starts:
        covered[start : start + window] += 1
    assert covered.min() >= 1 and starts[0] == 0 and min(frames, starts[-1] + window) == frames
    assert all(b - a <= window - overlap for a, b in zip(starts, starts[1:]))


def test_context_window_errors_and_composition(tiny):
    model = tiny[0]
    with pytest.raises(NodeInputError, match="overlap 16 must be at least 0 and below frames_per_window"):
        LongVideoContextWindows().patch(model, frames_per_window=16, overlap=16)
    windowed = LongVideoContextWindows().patch(model, 16, 4)[0]
    assert windowed.context_width == model.context_width and windowed.latent_channels == model.latent_channels
    from longvideo.nodes.attention import LongVideoTemporalAttention

    patched = LongVideoTemporalAttention().patch(windowed, "window", window=5)[0]
    assert isinstance(patched, WindowedDenoiser) and patched.inner.temporal_scope is not None


# --- attention backend and VAE scale ---------------------------------------------------------------


def test_attention_backend(tiny_model_folder):
    from diffusers.models.attention_processor import AttnProcessor2_0

    model, _, vae = LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder, attention="sdpa")
    processors = list(model.unet.attn_processors.values()) + list(vae.vae.attn_processors.values())
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)
    with pytest.raises(NodeInputError, match="attention 'flash' is unknown: choose one of sdpa, xformers"):
        LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder, attention="flash")


@pytest.mark.skipif(importlib.util.find_spec("xformers") is not None, reason="xformers is installed")
def test_xformers_without_the_package_is_a_clear_error(tiny_model_folder, upscaler_folder):
    with pytest.raises(ModelLoadError, match="xformers package, which is not installed.*choose attention 'sdpa'"):
        LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder, attention="xformers")
    with pytest.raises(ModelLoadError, match="xformers package"):
        LongVideoLatentUpscaleModelLoader().load(model="", dtype="fp32", model_path=upscaler_folder, attention="xformers")


def test_vae_scale_round_trip(tiny_model_folder):
    frames = torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    plain = load_text_to_video(tiny_model_folder).vae
    scaled = LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder, vae_scale=2.5)[2]
    assert scaled.scaling_factor == pytest.approx(2.5 * plain.scaling_factor)
    latents = scaled.encode(frames, 2)
    assert torch.allclose(latents, 2.5 * plain.encode(frames, 2), atol=1e-6)
    decoded = torch.cat(list(scaled.decode_batches(latents, 2)))
    assert torch.allclose(decoded, torch.cat(list(plain.decode_batches(latents / 2.5, 2))), atol=1e-6)
    with pytest.raises(NodeInputError, match="vae_scale must be above 0"):
        LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder, vae_scale=0.0)
