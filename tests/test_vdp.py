"""video-diffusion-pytorch models: key layout, checkpoint loading, schedule, pixel-space sampling and the nodes.

The comparisons with the original package run when it is installed (it needs torchvision only for its trainer
and gif helpers, which these tests stub): pip install --no-deps video-diffusion-pytorch==0.7.0 einops-exts
rotary-embedding-torch (einops comes with it).
"""

import json
import logging
import math
import os
import sys
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from longvideo.models.denoiser import KnownFrames
from longvideo.models.loader import ModelLoadError
from longvideo.models.vae import PixelVAE
from longvideo.models.vdp import RelativePositionBias, VDPConfig, VDPUnet3D, cosine_betas, null_embedding_looks_untrained
from longvideo.models.vdp_checkpoint import infer_config, load_vdp, split_state_dict
from longvideo.nodes.common import NodeInputError
from longvideo.nodes.continuation import LongVideoContinuationSampler
from longvideo.nodes.hierarchy import LongVideoHierarchicalSampler
from longvideo.nodes.interpolation import LongVideoLatentInterpolate
from longvideo.nodes.latents import LongVideoDecode, LongVideoEmptyLatent, LongVideoEncode
from longvideo.nodes.sampler import LongVideoSampler
from longvideo.nodes.vdp import LongVideoVDPCondition, LongVideoVDPLoader
from longvideo.sampling.denoise import TextGuidance, denoise
from longvideo.sampling.frame_conditioning import GuidanceConditioning, ReplaceConditioning
from longvideo.sampling.schedulers import make_scheduler

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
RMS = VDPConfig(dim=8, dim_mults=(1, 2), cond_dim=6, attn_heads=2, attn_dim_head=8, norm="rms")
GROUP = VDPConfig(dim=8, dim_mults=(1, 2, 2), attn_heads=2, attn_dim_head=40, use_sparse_linear_attn=False, norm="group")


def tiny_network(config: VDPConfig, seed: int = 0) -> VDPUnet3D:
    """Random weights, norms and biases included, so that every parameter matters."""
    torch.manual_seed(seed)
    network = VDPUnet3D(config).eval()
    with torch.no_grad():
        for parameter in network.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    return network


def schedule_buffers(betas: torch.Tensor) -> dict:
    """GaussianDiffusion's 12 buffers, computed as the original does (float64, stored as float32)."""
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    previous = torch.cat([torch.ones(1, dtype=betas.dtype), alphas_cumprod[:-1]])
    posterior_variance = betas * (1 - previous) / (1 - alphas_cumprod)
    buffers = {
        "betas": betas, "alphas_cumprod": alphas_cumprod, "alphas_cumprod_prev": previous,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - alphas_cumprod).log(), "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(), "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * previous.sqrt() / (1 - alphas_cumprod),
        "posterior_mean_coef2": (1 - previous) * (1 - betas).sqrt() / (1 - alphas_cumprod),
    }
    return {name: value.float() for name, value in buffers.items()}


def diffusion_state_dict(network: VDPUnet3D, betas=None) -> dict:
    state = schedule_buffers(cosine_betas(1000) if betas is None else betas)
    state.update({f"denoise_fn.{key}": value.clone() for key, value in network.state_dict().items()})
    return state


def save_trainer_checkpoint(path, model: VDPUnet3D, ema: VDPUnet3D) -> str:
    torch.save({"step": 5000, "model": diffusion_state_dict(model), "ema": diffusion_state_dict(ema),
                "scaler": {"scale": 65536.0, "growth_factor": 2.0}}, path)
    return str(path)


# ---------------------------------------------------------------------------------------------------
# layout and loading


def test_state_dicts_have_the_original_keys_and_shapes():
    """The key lists were written by video-diffusion-pytorch 0.7.0 itself (0.6.3: its Blocks with GroupNorm(8))."""
    with open(os.path.join(DATA, "vdp_original_keys.json"), encoding="utf-8") as handle:
        layouts = list(json.load(handle).values())
    ours = diffusion_state_dict(VDPUnet3D(RMS))
    assert {k: list(v.shape) for k, v in ours.items()} == layouts[0]
    assert {k: list(v.shape) for k, v in VDPUnet3D(GROUP).state_dict().items()} == layouts[1]


@pytest.mark.parametrize("config", [RMS, GROUP], ids=["rms-v0.7", "groupnorm-v0.6"])
def test_trainer_checkpoint_loads_strictly_with_inferred_hyperparameters(tmp_path, config):
    model, ema = tiny_network(config, seed=1), tiny_network(config, seed=2)
    path = save_trainer_checkpoint(tmp_path / "model-5.pt", model, ema)

    loaded = load_vdp(path)
    assert loaded.denoiser.config == VDPConfig(**{**config.__dict__, "out_dim": 3, "init_dim": 8})
    for key, value in loaded.denoiser.network.state_dict().items():
        assert torch.equal(value, ema.state_dict()[key]), key
    from_model = load_vdp(path, weights="model").denoiser.network.state_dict()
    assert torch.equal(from_model["init_conv.weight"], model.init_conv.weight)
    assert loaded.vae.latent_channels == 3 and loaded.denoiser.latent_channels == 3 and loaded.denoiser.downscale == 1
    assert loaded.denoiser.context_width == (config.cond_dim or 0)


def test_bare_state_dicts_under_wrapper_prefixes_and_safetensors_load(tmp_path):
    network = tiny_network(RMS)
    plain = {k: v.clone() for k, v in network.state_dict().items()}
    save_file(plain, str(tmp_path / "unet.safetensors"))
    rotary = sorted(k for k in plain if k.endswith("rotary_emb.freqs"))
    save_file({k: v for k, v in plain.items() if k not in rotary[1:]}, str(tmp_path / "deduplicated.safetensors"))
    wrapped = {f"ema_model.denoise_fn.{k}": v for k, v in plain.items()}
    wrapped.update({f"online_model.denoise_fn.{k}": v * 0 for k, v in plain.items()})
    wrapped.update({"ema_model.betas": cosine_betas(1000).float(), "step": torch.tensor(3)})
    torch.save(wrapped, tmp_path / "ema.pt")
    torch.save({f"module.{k}": v for k, v in plain.items()}, tmp_path / "ddp.pth")

    for name in ("unet.safetensors", "deduplicated.safetensors", "ema.pt", "ddp.pth"):
        state = load_vdp(str(tmp_path / name)).denoiser.network.state_dict()
        assert all(torch.equal(state[k], plain[k]) for k in plain), name
    unet, schedule = split_state_dict(wrapped)
    assert set(unet) == set(plain) and set(schedule) == {"betas"}


def test_unknown_layouts_fail_with_clear_errors(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match="not a video-diffusion-pytorch checkpoint"):
        load_vdp(str(tmp_path / "other.pt"))

    state = dict(tiny_network(RMS).state_dict())
    del state["init_temporal_attn.fn.fn.fn.to_qkv.weight"]
    with pytest.raises(ModelLoadError, match="to_qkv.weight' is missing"):
        infer_config(state)

    state = dict(tiny_network(RMS).state_dict())
    state["downs.0.0.block1.norm.weight"] = state.pop("downs.0.0.block1.norm.gamma")
    torch.save(state, tmp_path / "mixed.pt")
    with pytest.raises(ModelLoadError, match="do not fit a video-diffusion-pytorch Unet3D"):
        load_vdp(str(tmp_path / "mixed.pt"))

    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "pickled.pt")
    with pytest.raises(ModelLoadError, match="weights_only=True"):
        load_vdp(str(tmp_path / "pickled.pt"))
    with pytest.raises(ModelLoadError, match="has no 'model' weights"):
        torch.save({"ema": diffusion_state_dict(tiny_network(RMS))}, tmp_path / "ema-only.pt")
        load_vdp(str(tmp_path / "ema-only.pt"), weights="model")


# ---------------------------------------------------------------------------------------------------
# schedule and sampler


def test_cosine_schedule_matches_its_formula():
    T, s = 1000, 0.008
    betas = cosine_betas(T, s)
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    alpha_bar = torch.cumprod(1 - betas, dim=0)
    expected = torch.tensor([f[t] / f[0] for t in range(1, T + 1)], dtype=torch.float64)
    assert torch.allclose(alpha_bar[:-1], expected[:-1], rtol=1e-9, atol=1e-12)
    assert betas[-1] == 0.9999 and betas.max() == 0.9999 and betas.min() > 0  # f(T) = 0: the last beta is clipped
    scheduler = make_scheduler("ddpm", load_denoiser_config())
    assert torch.allclose(scheduler.alphas_cumprod.double(), alpha_bar, rtol=1e-5, atol=1e-7)


def load_denoiser_config():
    from longvideo.models.vdp import scheduler_config

    return scheduler_config(cosine_betas(1000))


def test_ddpm_step_is_the_original_clipped_ancestral_step():
    """One DDPM step through the loop's clip equals GaussianDiffusion.p_sample (clipped x0, posterior mean and log
    variance from its buffers) given the same noise."""
    from longvideo.sampling.denoise import alpha_bar, clip_prediction

    buffers = schedule_buffers(cosine_betas(1000))
    scheduler = make_scheduler("ddpm", load_denoiser_config())
    scheduler.set_timesteps(1000)
    assert scheduler.timesteps.tolist() == list(range(999, -1, -1))
    torch.manual_seed(0)
    for t in (999, 500, 3, 0):
        x, eps = torch.randn(4, 3, 8, 8) * 1.5, torch.randn(4, 3, 8, 8)
        timestep = torch.tensor(t)
        clipped = clip_prediction(eps, x, alpha_bar(scheduler, timestep), "epsilon", 1.0)
        ours = scheduler.step(clipped, timestep, x, generator=torch.Generator().manual_seed(t)).prev_sample
        x0 = (buffers["sqrt_recip_alphas_cumprod"][t] * x - buffers["sqrt_recipm1_alphas_cumprod"][t] * eps).clamp(-1, 1)
        mean = buffers["posterior_mean_coef1"][t] * x0 + buffers["posterior_mean_coef2"][t] * x
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        original = mean + (t > 0) * (0.5 * buffers["posterior_log_variance_clipped"][t]).exp() * noise
        # diffusers keeps alpha-bar in float32 and forms 1 - alpha-bar from it; the original derives its coefficients
        # in float64. That rounding is all that differs: up to ~3e-4 near t = 0, where 1 - alpha-bar is ~1e-4.
        assert torch.allclose(ours, original, atol=1e-3), t
        assert torch.allclose(ours, original, atol=2e-5) or t < 10, t


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_clipped_prediction_carries_the_clipped_clean_estimate(prediction_type):
    from longvideo.sampling.denoise import alpha_bar, clip_prediction

    scheduler = make_scheduler("euler", {**load_denoiser_config(), "timestep_spacing": "linspace"})
    scheduler.set_timesteps(7)
    timestep = scheduler.timesteps[3]
    assert timestep != int(timestep)  # linspace spacing falls between training timesteps
    alpha = alpha_bar(scheduler, timestep)
    sigma = scheduler.sigmas[3]
    assert torch.isclose(alpha, 1 / (1 + sigma**2), rtol=1e-5)
    clean, noise = torch.randn(2, 3, 4, 4) * 2, torch.randn(2, 3, 4, 4)
    a, s = alpha.sqrt(), (1 - alpha).sqrt()
    x = a * clean + s * noise
    prediction = noise if prediction_type == "epsilon" else a * noise - s * clean
    clipped = clip_prediction(prediction, x, alpha, prediction_type, 1.0)
    recovered = (x - s * clipped) / a if prediction_type == "epsilon" else a * x - s * clipped
    assert torch.allclose(recovered, clean.clamp(-1, 1), atol=1e-4)
    inside = clean.abs() < 1
    assert torch.allclose(clipped[inside], prediction[inside], atol=1e-4)


def test_temporal_position_buckets_follow_t5():
    buckets = RelativePositionBias(heads=1).buckets(41)
    offsets = {(i - j): int(buckets[i, j]) for i in range(41) for j in range(41)}
    assert [offsets[n] for n in range(8)] == list(range(8))  # exact below 8
    assert [offsets[-n] for n in range(1, 8)] == [16 + n for n in range(1, 8)]  # the other sign: 16 buckets up
    assert offsets[8] == 8 and offsets[16] == 12 and offsets[31] == 15 and offsets[40] == 15 and offsets[-40] == 31


def test_null_embedding_check():
    torch.manual_seed(0)
    drawn = torch.randn(1, 768)
    assert null_embedding_looks_untrained(drawn)
    assert not null_embedding_looks_untrained(drawn * 0.3 + 0.2)
    assert null_embedding_looks_untrained(drawn * 0.3, twin=drawn * 0.3)


# ---------------------------------------------------------------------------------------------------
# pixel-space sampling through the loop and the nodes


@pytest.fixture
def vdp(tmp_path, monkeypatch):
    """(model, vae) from LongVideoVDPLoader, the checkpoint found by name in the models folder."""
    models = tmp_path / "models"
    os.makedirs(models / "vdp")
    save_trainer_checkpoint(models / "vdp" / "model-3.pt", tiny_network(RMS, 1), tiny_network(RMS, 2))
    choices = LongVideoVDPLoader.INPUT_TYPES()["required"]["checkpoint"][0]
    assert choices == ["vdp/model-3.pt"]
    return LongVideoVDPLoader().load("vdp/model-3.pt", "fp32", "ema")


def condition(model, mode="random", **kwargs):
    return LongVideoVDPCondition().condition(model, mode, **kwargs)[0]


def test_guidance_uses_the_null_vector_as_the_original_does(vdp):
    model, _ = vdp
    network = model.network
    positive, negative = condition(model, seed=3), condition(model, "null")
    assert torch.equal(negative[0][0][0], network.null_cond_emb.detach())
    x, t = torch.randn(1, 3, 4, 8, 8), torch.tensor(700)
    guidance = TextGuidance(positive[0][0], negative[0][0], cfg=4.0)
    guided = guidance.combine(model(torch.cat([x, x]), t, guidance.context(1)))
    with torch.no_grad():
        cond = network(x, t.reshape(1).float(), positive[0][0][:, 0])
        null = network(x, t.reshape(1).float(), network.null_cond_emb)
    assert torch.allclose(guided, null + (cond - null) * 4.0, atol=1e-5)


def test_condition_node_modes_and_errors(vdp):
    model, _ = vdp
    assert torch.equal(condition(model, "zeros")[0][0], torch.zeros(1, 1, 6))
    assert torch.equal(condition(model, "values", values="1, 2 3,4;5 6")[0][0], torch.arange(1.0, 7).reshape(1, 1, 6))
    assert torch.equal(condition(model, "values", values="0.5")[0][0], torch.full((1, 1, 6), 0.5))
    assert torch.equal(condition(model, seed=4)[0][0], condition(model, seed=4)[0][0])
    with pytest.raises(NodeInputError, match="holds 2 numbers but the model takes 6"):
        condition(model, "values", values="1 2")
    with pytest.raises(NodeInputError, match="needs 'text' and 'bert_path'"):
        condition(model, "bert", text="a cat")
    with pytest.raises(NodeInputError, match="not a video-diffusion-pytorch model"):
        LongVideoVDPCondition().condition(object(), "zeros")


def test_untrained_null_vector_warns(tmp_path, caplog):
    config = VDPConfig(dim=8, dim_mults=(1,), cond_dim=256, attn_heads=1, attn_dim_head=8)
    model = tiny_network(config, 1)
    ema = tiny_network(config, 2)
    with torch.no_grad():
        model.null_cond_emb.copy_(torch.randn(1, 256) * 0.2 + 0.1)  # moved away from N(0, 1) but never averaged
        ema.null_cond_emb.copy_(model.null_cond_emb)
    path = save_trainer_checkpoint(tmp_path / "model-9.pt", model, ema)
    with caplog.at_level(logging.WARNING):
        loaded = load_vdp(path)
    assert "null_cond_emb looks untrained" in caplog.text
    caplog.clear()
    with torch.no_grad():
        loaded.denoiser.network.null_cond_emb.copy_(torch.randn(1, 256))
    with caplog.at_level(logging.WARNING):
        condition(loaded.denoiser, "null")
    assert "null vector looks untrained" in caplog.text


def test_plain_sampler_makes_pixels_in_range(vdp):
    model, vae = vdp
    latent = LongVideoEmptyLatent().generate(16, 8, 5, 1, vae=vae)[0]
    assert latent["samples"].shape == (1, 3, 5, 8, 16)
    for scheduler in ("ddim", "ddpm", "dpmpp_2m", "euler"):
        samples = LongVideoSampler().sample(model, condition(model), condition(model, "null"), latent, 7, 3, 2.0, scheduler)[0]["samples"]
        assert samples.shape == (1, 3, 5, 8, 16) and torch.isfinite(samples).all()
        if scheduler in ("ddim", "ddpm"):  # their last step returns the clipped clean estimate
            assert samples.abs().max() <= 1.0 + 1e-5
    images = LongVideoDecode().decode(vae, {"samples": samples}, 2)[0]
    assert images.shape == (5, 8, 16, 3) and torch.allclose(images, ((samples[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1))
    with pytest.raises(ValueError, match="multiples of 2"):
        model(torch.zeros(1, 3, 2, 6, 7), torch.tensor(5), torch.zeros(1, 1, 6))


def test_continuation_from_an_image_keeps_the_image_as_frame_zero(vdp):
    model, vae = vdp
    image = torch.rand(1, 8, 8, 3)
    latents = LongVideoContinuationSampler().sample(
        model, condition(model), condition(model, "null"), 8, 8, 4, 3, 1, 2, "replace", 5, 2, 1.5, "ddim",
        start_image=image, vae=vae,
    )[0]["samples"]
    assert latents.shape[:2] == (1, 3) and latents.shape[3:] == (8, 8)
    assert torch.allclose(LongVideoDecode().decode(vae, {"samples": latents[:, :, :1]}, 1)[0], image, atol=1e-6)
    with pytest.raises(NodeInputError, match="start_latent is 16x16"):
        LongVideoContinuationSampler().sample(model, condition(model), condition(model, "null"), 8, 8, 4, 2, 1, 1,
                                              "replace", 5, 2, 1.5, "ddim", start_latent={"samples": torch.zeros(1, 3, 2, 16, 16)})


@pytest.mark.parametrize("method", ["replace", "guidance"])
def test_known_endpoints_as_in_hierarchical_infill(vdp, method):
    """Infill between two keyframes: the loop with known first and last frames, any index set."""
    model, _ = vdp
    ends = torch.rand(1, 3, 2, 8, 8) * 2 - 1
    known = KnownFrames([0, 5], ends)
    conditioning = ReplaceConditioning(known) if method == "replace" else GuidanceConditioning(known, 1.0, "epsilon")
    guidance = TextGuidance(condition(model)[0][0], condition(model, "null")[0][0], 2.0)
    latents = denoise(model, guidance, (1, 3, 6, 8, 8), steps=3, seed=2, scheduler="ddim", conditioning=conditioning)
    assert latents.shape == (1, 3, 6, 8, 8) and torch.isfinite(latents).all()
    if method == "replace":
        assert torch.equal(latents[:, :, [0, 5]], ends)


def test_hierarchical_sampler_runs_a_pixel_space_model(vdp):
    """Keyframes then infill on pixels: the latent size follows the model (downscale 1), parents stay exact."""
    model, _ = vdp
    prompts = [condition(model, seed=s) for s in range(3)]
    shallow = LongVideoHierarchicalSampler().sample(model, prompts, condition(model, "null"), "timeline", 8, 8, 4, 1,
                                                    "replace", 3, 2, 2.0, "ddim", 8)[0]["samples"]
    deep = LongVideoHierarchicalSampler().sample(model, prompts, condition(model, "null"), "timeline", 8, 8, 4, 2,
                                                 "replace", 3, 2, 2.0, "ddim", 8)[0]["samples"]
    assert shallow.shape == (1, 3, 4, 8, 8) and deep.shape == (1, 3, 10, 8, 8)
    assert torch.equal(deep[:, :, ::3], shallow) and deep.abs().max() <= 1.0 + 1e-5


def test_latent_interpolation_runs_a_pixel_space_model(vdp):
    model, _ = vdp
    keyframes = torch.rand(1, 3, 3, 8, 8) * 2 - 1
    out = LongVideoLatentInterpolate().interpolate(model, condition(model), condition(model, "null"), {"samples": keyframes},
                                                   4, 1, "replace", 1, 2, 2.0, "ddim")[0]["samples"]
    assert out.shape == (1, 3, 9, 8, 8) and torch.equal(out[:, :, ::4], keyframes)


def test_pixel_vae_round_trip():
    images = torch.rand(3, 4, 6, 3)
    for channels in (3, 4):
        vae = PixelVAE(channels)
        latents = LongVideoEncode().encode(vae, images, 2)[0]["samples"]
        assert latents.shape == (1, channels, 3, 4, 6) and latents.min() >= -1 and latents.max() <= 1
        assert torch.allclose(torch.cat(list(vae.decode_batches(latents, 2))), images, atol=1e-6)
    grey = PixelVAE(1)
    decoded = torch.cat(list(grey.decode_batches(grey.encode(images, 3), 3)))
    assert torch.allclose(decoded[..., 0], decoded[..., 2]) and torch.allclose(decoded[..., 0], (images * torch.tensor(PixelVAE.LUMA)).sum(-1), atol=1e-6)


def test_loader_node_errors(tmp_path):
    with pytest.raises(NodeInputError, match="was not found"):
        LongVideoVDPLoader().load("missing.pt", "fp32", "ema")
    torch.save({"x": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(NodeInputError, match="LongVideoVDPLoader: .*not a video-diffusion-pytorch checkpoint"):
        LongVideoVDPLoader().load("", "fp32", "ema", checkpoint_path=str(tmp_path / "x.pt"))


# ---------------------------------------------------------------------------------------------------
# against the original package


@pytest.fixture(scope="module")
def original(request):
    """video_diffusion_pytorch.video_diffusion_pytorch, with torchvision (trainer and gif helpers only) stubbed."""
    pytest.importorskip("einops_exts")
    pytest.importorskip("rotary_embedding_torch")
    stubs = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.transforms", "torchvision.utils")}
    stubs["torchvision"].transforms, stubs["torchvision"].utils = stubs["torchvision.transforms"], stubs["torchvision.utils"]
    stubs["torchvision.transforms"].ToTensor = lambda: None
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        module = pytest.importorskip("video_diffusion_pytorch.video_diffusion_pytorch")
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    return module


def original_unet(original, config: VDPConfig):
    unet = original.Unet3D(dim=config.dim, dim_mults=config.dim_mults, cond_dim=config.cond_dim, attn_heads=config.attn_heads,
                           attn_dim_head=config.attn_dim_head, use_sparse_linear_attn=config.use_sparse_linear_attn)
    if config.norm == "group":  # v0.6.3 differs from v0.7.0 only here (commit 2b0b75f): Block.norm = GroupNorm(8)
        for module in unet.modules():
            if isinstance(module, original.Block):
                module.norm = nn.GroupNorm(8, module.proj.out_channels)
    return unet.eval()


@pytest.mark.parametrize("config", [RMS, GROUP, VDPConfig(dim=16, dim_mults=(1, 2, 4), cond_dim=5, attn_heads=3, attn_dim_head=48)],
                         ids=["rms", "groupnorm", "wide-heads"])
def test_same_output_as_the_original_on_the_same_weights(original, tmp_path, config):
    reference = original_unet(original, config)
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in reference.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    diffusion = original.GaussianDiffusion(reference, image_size=16, num_frames=10)
    torch.save({"step": 1, "model": diffusion.state_dict(), "ema": diffusion.state_dict(), "scaler": {}}, tmp_path / "model-1.pt")
    model = load_vdp(str(tmp_path / "model-1.pt")).denoiser
    assert model.config.dim_mults == config.dim_mults and model.config.norm == config.norm

    x, time = torch.randn(2, 3, 10, 16, 16), torch.tensor([0, 613])
    cond = torch.randn(2, config.cond_dim) if config.cond_dim else None
    with torch.no_grad():
        expected = reference(x, time, cond=cond)
        expected_guided = reference.forward_with_cond_scale(x, time, cond=cond, cond_scale=3.0)
    context = cond[:, None, :] if cond is not None else torch.zeros(2, 1, 0)
    assert torch.allclose(model(x, time.float(), context), expected, atol=1e-5)
    if cond is not None:
        null = model.null_condition[:, None, :].expand(2, -1, -1)
        guidance = TextGuidance(context, null, 3.0)
        guided = guidance.combine(model(torch.cat([x, x]), time.float().repeat(2), guidance.context(2)))
        assert torch.allclose(guided, expected_guided, atol=1e-5)


def test_original_schedule_buffers_match(original):
    diffusion = original.GaussianDiffusion(original_unet(original, RMS), image_size=8, num_frames=2)
    ours = schedule_buffers(cosine_betas(1000))
    for name, value in ours.items():
        assert torch.allclose(getattr(diffusion, name), value, rtol=1e-6, atol=1e-7), name
    scheduler = make_scheduler("ddpm", load_denoiser_config())
    assert torch.allclose(scheduler.alphas_cumprod, diffusion.alphas_cumprod, rtol=2e-5, atol=1e-8)


def test_bert_condition_matches_the_original_embedding(original, tmp_path, vdp):
    from transformers import BertConfig, BertModel, BertTokenizer

    from longvideo.models.vdp_text import bert_condition
    import video_diffusion_pytorch.text as text

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "ball", "rolls", "left"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=False)
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(words), hidden_size=6, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=8)).eval()
    bert.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    prompts = ["a red ball rolls left", "a ball"]
    # The original calls batch_encode_plus, which transformers 5 dropped; it was the tokenizer's __call__.
    text.MODEL, text.TOKENIZER = bert, types.SimpleNamespace(batch_encode_plus=tokenizer)
    try:
        expected = text.bert_embed(text.tokenize(prompts))
    finally:
        text.MODEL = text.TOKENIZER = None
    assert torch.allclose(bert_condition(str(tmp_path / "bert"), prompts), expected, atol=1e-6)

    model, _ = vdp  # cond_dim 6, as this BERT's hidden size
    vector = condition(model, "bert", text=prompts[0], bert_path=str(tmp_path / "bert"))[0][0]
    assert torch.allclose(vector[0, 0], expected[0], atol=1e-6)


def test_ddpm_over_every_training_step_reproduces_the_original_sampler(original, tmp_path, monkeypatch):
    """GaussianDiffusion.sample's loop (guided, clipped, its noise from torch's global generator after manual_seed)
    against ours with scheduler ddpm, steps = the training timesteps and the same seed; 50 of them here to keep the
    test short (the schedule comes from the checkpoint's betas). The VDP Denoiser's "video" noise layout draws every
    step's noise in the original's [B, C, T, H, W] order."""
    config = VDPConfig(dim=8, dim_mults=(1,), cond_dim=4, attn_heads=1, attn_dim_head=8)
    reference = original_unet(original, config)
    diffusion = original.GaussianDiffusion(reference, image_size=8, num_frames=3, timesteps=50)
    torch.save(diffusion.state_dict(), tmp_path / "diffusion.pt")
    model = load_vdp(str(tmp_path / "diffusion.pt")).denoiser
    assert model.scheduler_config["num_train_timesteps"] == 50 and model.noise_layout == "video"
    cond = torch.randn(2, 4)

    monkeypatch.setattr(original, "tqdm", lambda iterable, **_: iterable)
    torch.manual_seed(11)
    expected = diffusion.sample(cond=cond, cond_scale=2.5) * 2 - 1
    monkeypatch.undo()
    guidance = TextGuidance(cond[:, None], model.null_condition[:, None], 2.5)
    ours = denoise(model, guidance, (2, 3, 3, 8, 8), steps=50, seed=11, scheduler="ddpm")
    assert (ours - expected).abs().max() < 1e-4, (ours - expected).abs().max()


# ---------------------------------------------------------------------------------------------------
# against vectors the original package made (tests/make_vdp_reference.py): run without the package


@pytest.fixture(scope="module")
def reference():
    from safetensors import safe_open

    with safe_open(os.path.join(DATA, "vdp_reference.safetensors"), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()


def test_seeded_ddpm_sample_is_the_original_sample(reference):
    """The original's GaussianDiffusion.sample after torch.manual_seed(11), 50 training steps, guided 2.5; ours:
    the checkpoint loaded from the original's layout, scheduler ddpm at its 50 steps, seed 11."""
    tensors, metadata = reference
    model = load_vdp(os.path.join(DATA, "vdp_reference_model.safetensors")).denoiser
    steps = int(metadata["steps"])
    assert model.scheduler_config["num_train_timesteps"] == steps == 50
    guidance = TextGuidance(tensors["cond"][:, None], model.null_condition[:, None], float(metadata["cond_scale"]))
    expected = tensors["sample"] * 2 - 1
    ours = denoise(model, guidance, tuple(expected.shape), steps=steps, seed=int(metadata["seed"]), scheduler="ddpm")
    assert (ours - expected).abs().max() <= 1e-4, (ours - expected).abs().max()
    assert (expected.abs() < 0.999).float().mean() > 0.5  # most values lie inside the clip range: a real comparison


def test_focus_present_mask_is_the_originals(reference):
    tensors, _ = reference
    network = load_vdp(os.path.join(DATA, "vdp_reference_model.safetensors")).denoiser.network
    outputs = {}
    for name, mask in (("all", [True, True]), ("second", [False, True]), ("none", [False, False])):
        with torch.no_grad():
            outputs[name] = network(tensors["x"], tensors["time"].float(), tensors["cond"], focus_present_mask=torch.tensor(mask))
        assert (outputs[name] - tensors[f"focus_{name}"]).abs().max() <= 1e-5, name
    assert (outputs["all"] - outputs["none"]).abs().max() > 1e-2  # the mask matters
    assert (outputs["second"][0] - outputs["none"][0]).abs().max() <= 1e-5  # per sample (float32 noise is CPU dependent)
    with torch.no_grad():
        assert torch.equal(network(tensors["x"], tensors["time"].float(), tensors["cond"], prob_focus_present=1.0), outputs["all"])
        assert torch.equal(network(tensors["x"], tensors["time"].float(), tensors["cond"], prob_focus_present=0.0), outputs["none"])
    with pytest.raises(ValueError, match="focus_present_mask has shape"):
        network(tensors["x"], tensors["time"].float(), tensors["cond"], focus_present_mask=torch.tensor([True]))


def test_focus_on_the_present_makes_frames_independent():
    """With every sample focused, no attention mixes frames except the first temporal attention (as in the original),
    so with its output projection zeroed, output frame j depends only on input frame j."""
    network = tiny_network(RMS, 4)
    with torch.no_grad():
        network.init_temporal_attn.fn.fn.fn.to_out.weight.zero_()
        x, time, cond = torch.randn(1, 3, 4, 8, 8), torch.tensor([10.0]), torch.randn(1, RMS.cond_dim)
        changed = x.clone()
        changed[:, :, 2] += 1
        focused = [network(v, time, cond, focus_present_mask=torch.tensor([True])) for v in (x, changed)]
        free = [network(v, time, cond) for v in (x, changed)]
    assert torch.equal(focused[0][:, :, [0, 1, 3]], focused[1][:, :, [0, 1, 3]])
    assert (free[0][:, :, [0, 1, 3]] - free[1][:, :, [0, 1, 3]]).abs().max() > 1e-4


def test_frame_layout_models_keep_their_noise_and_video_layout_changes_it(vdp):
    """The "video" layout only changes the order the step noise fills the video: DDIM (no step noise) is unchanged."""
    model, _ = vdp
    guidance = TextGuidance(condition(model, seed=1)[0][0], None, 1.0)
    results = {}
    for layout in ("video", "frames"):
        model.noise_layout = layout
        results[layout] = {s: denoise(model, guidance, (1, 3, 3, 8, 8), steps=3, seed=4, scheduler=s) for s in ("ddim", "ddpm")}
    del model.noise_layout
    assert torch.equal(results["video"]["ddim"], results["frames"]["ddim"])
    assert not torch.equal(results["video"]["ddpm"], results["frames"]["ddpm"])
    # One seed per item: an item comes out the same alone or beside another.
    pair = denoise(model, TextGuidance(guidance.positive.expand(2, -1, -1), None, 1.0), (2, 3, 3, 8, 8), steps=3, seed=[4, 9],
                   scheduler="ddpm")
    alone = denoise(model, guidance, (1, 3, 3, 8, 8), steps=3, seed=[9], scheduler="ddpm")
    assert (pair[1:] - alone).abs().max() <= 1e-5 and (pair[:1] - results["video"]["ddpm"]).abs().max() <= 1e-5
    assert (pair[1:] - pair[:1]).abs().max() > 0.1
