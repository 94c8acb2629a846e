"""lucidrains' video-diffusion-pytorch models: the Unet3D network, its cosine schedule, and a pixel-space Denoiser.

`VDPUnet3D` has the parameter names, shapes and function of video-diffusion-pytorch's `Unet3D` (v0.7.0 with
RMSNorm in the resnet blocks, and v0.6.x with GroupNorm(8)), so its checkpoints load strictly. The network works
on pixels in [-1, 1] of shape [B, channels, frames, H, W]; H and W must be multiples of 2^(levels - 1):

- space-time factored: spatial convs are (1, 3, 3), time is mixed only by attention over the frames at every
  pixel (rotary embedding + T5 relative position bias); spatial attention is linear (per frame) except for a
  full attention at the lowest resolution;
- FiLM conditioning: every resnet block scales and shifts by a projection of [time embedding, condition],
  the condition being one vector per sample (cond_dim wide; `null_cond_emb` is the unconditional vector).

Sampling facts of the original `GaussianDiffusion`: a cosine beta schedule (s = 0.008, clipped at 0.9999), epsilon
prediction, 1000 ancestral steps whose clean estimate is clipped to [-1, 1]; decoding is (x + 1) / 2.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.comfy import ManagedModule
from .denoiser import Denoiser


BUCKETS = 32  # T5 relative position buckets of the temporal attention (max distance 32), fixed in the original
SPATIAL_DIM_HEAD = 32  # the spatial attentions always use 32 channels per head, whatever attn_dim_head is


@dataclass(frozen=True)
class VDPConfig:
    """Unet3D hyper-parameters (the original constructor's names). norm: "rms" (v0.7) or "group" (v0.6.x)."""

    dim: int
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    channels: int = 3
    out_dim: int | None = None
    cond_dim: int | None = None
    attn_heads: int = 8
    attn_dim_head: int = 32
    init_dim: int | None = None
    init_kernel_size: int = 7
    use_sparse_linear_attn: bool = True
    norm: str = "rms"
    resnet_groups: int = 8

    @property
    def size_multiple(self) -> int:
        """Frame height and width must be multiples of this (one halving per level but the last)."""
        return 2 ** (len(self.dim_mults) - 1)


# ---------------------------------------------------------------------------------------------------
# schedule


def cosine_betas(timesteps: int = 1000, s: float = 0.008) -> torch.Tensor:
    """The original's cosine schedule (Nichol & Dhariwal), computed in float64: betas [timesteps]."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos((x / timesteps + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clip(0, 0.9999)


def scheduler_config(betas: torch.Tensor) -> dict:
    """A diffusers scheduler config with the model's training schedule.

    With DDPMScheduler at len(betas) steps it is the original ancestral sampler: fixed-small posterior variance,
    clean estimate clipped to [-1, 1], no noise at t = 0. Trailing spacing puts the first step of shorter runs at
    the last training timestep, where the cosine schedule is (almost) pure noise.
    """
    return {
        "num_train_timesteps": len(betas),
        "trained_betas": [float(b) for b in betas],
        "beta_schedule": "linear",
        "prediction_type": "epsilon",
        "variance_type": "fixed_small",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "timestep_spacing": "trailing",
    }


# ---------------------------------------------------------------------------------------------------
# building blocks (attribute names follow the original, so state-dict keys match)


class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, **kwargs):
        return self.fn(x, **kwargs) + x


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of [B, C, F, H, W], gain only."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, dim, 1, 1, 1))

    def forward(self, x):
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) / (var + self.eps).sqrt() * self.gamma


class PreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.fn = fn
        self.norm = ChannelLayerNorm(dim)

    def forward(self, x, **kwargs):
        return self.fn(self.norm(x), **kwargs)


class ChannelRMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1, 1))

    def forward(self, x):
        return F.normalize(x, dim=1) * self.scale * self.gamma


class Block(nn.Module):
    """(1,3,3) conv -> norm -> optional FiLM (x * (scale + 1) + shift) -> SiLU."""

    def __init__(self, dim, dim_out, norm, groups):
        super().__init__()
        self.proj = nn.Conv3d(dim, dim_out, (1, 3, 3), padding=(0, 1, 1))
        self.norm = ChannelRMSNorm(dim_out) if norm == "rms" else nn.GroupNorm(groups, dim_out)

    def forward(self, x, scale_shift=None):
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class ResnetBlock(nn.Module):
    def __init__(self, dim, dim_out, norm, groups, emb_dim=None):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, dim_out * 2)) if emb_dim else None
        self.block1 = Block(dim, dim_out, norm, groups)
        self.block2 = Block(dim_out, dim_out, norm, groups)
        self.res_conv = nn.Conv3d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x, emb=None):
        scale_shift = None
        if self.mlp is not None:
            scale_shift = self.mlp(emb)[:, :, None, None, None].chunk(2, dim=1)
        return self.block2(self.block1(x, scale_shift)) + self.res_conv(x)


class SpatialLinearAttention(nn.Module):
    """Per-frame linear attention: queries softmaxed over channels, keys over positions."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = SPATIAL_DIM_HEAD**-0.5
        hidden = SPATIAL_DIM_HEAD * heads
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        b, c, f, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        q, k, v = (t.reshape(b * f, self.heads, SPATIAL_DIM_HEAD, h * w) for t in self.to_qkv(frames).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q).reshape(b * f, -1, h, w)
        return self.to_out(out).reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding over the first `dim` channels, rotating interleaved pairs (rotary-embedding-torch)."""

    def __init__(self, dim, theta=10000):
        super().__init__()
        self.freqs = nn.Parameter(1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim), requires_grad=False)

    def rotate(self, t):
        positions = torch.arange(t.shape[-2], device=t.device, dtype=torch.float32)
        angles = (positions[:, None] * self.freqs.float()[None, :]).repeat_interleave(2, dim=-1)
        rotated, rest = t[..., : angles.shape[-1]].float(), t[..., angles.shape[-1] :]
        pairs = rotated.unflatten(-1, (-1, 2))
        half_turn = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return torch.cat(((rotated * angles.cos() + half_turn * angles.sin()).to(t.dtype), rest), dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention over the second-last axis of [..., n, dim], with optional rotary and logit bias."""

    def __init__(self, dim, heads, dim_head, rotary_emb=None):
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.rotary_emb = rotary_emb
        self.to_qkv = nn.Linear(dim, dim_head * heads * 3, bias=False)
        self.to_out = nn.Linear(dim_head * heads, dim, bias=False)

    def forward(self, x, pos_bias=None, focus_present_mask=None):
        """`focus_present_mask` [B] (bool, B = x.shape[0]): those samples attend only to themselves (the original's
        image + video co-training); when every sample does, the output is the projected values, as in the original."""
        lead, (n, width) = x.shape[:-2], x.shape[-2:]
        qkv = self.to_qkv(x.reshape(-1, n, width)).chunk(3, dim=-1)
        if focus_present_mask is not None and bool(focus_present_mask.all()):
            return self.to_out(qkv[2]).reshape(*lead, n, -1)
        q, k, v = (t.unflatten(-1, (self.heads, self.dim_head)).transpose(1, 2) for t in qkv)
        if self.rotary_emb is not None:
            q, k = self.rotary_emb.rotate(q), self.rotary_emb.rotate(k)
        bias = None if pos_bias is None else pos_bias.to(q.dtype)
        if focus_present_mask is not None and bool(focus_present_mask.any()):
            bias = _focus_present_bias(focus_present_mask, lead, n, bias, q.dtype, q.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.to_out(out.transpose(1, 2).flatten(-2)).reshape(*lead, n, -1)


def _focus_present_bias(mask, lead, n, bias, dtype, device):
    """The logit bias [rows, heads or 1, n, n] that keeps the masked samples' queries on their own frame (the
    original fills the other logits with -finfo.max; -inf gives the same softmax). Rows are the flattened `lead`
    dims, whose first is the batch."""
    per_row = mask.to(device).bool().reshape(-1, *([1] * (len(lead) - 1))).expand(*lead).reshape(-1)
    eye = torch.eye(n, dtype=torch.bool, device=device)
    allowed = torch.where(per_row[:, None, None, None], eye, torch.ones_like(eye))
    focus = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))
    return focus if bias is None else focus + bias


class OverFrames(nn.Module):
    """Runs `fn` across the frames at every pixel: [B, C, F, H, W] <-> [B, H*W, F, C]."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, pos_bias=None, focus_present_mask=None):
        b, c, f, h, w = x.shape
        out = self.fn(x.permute(0, 3, 4, 2, 1).reshape(b, h * w, f, c), pos_bias=pos_bias, focus_present_mask=focus_present_mask)
        return out.reshape(b, h, w, f, c).permute(0, 4, 3, 1, 2)


class OverPixels(nn.Module):
    """Runs `fn` across the pixels of every frame: [B, C, F, H, W] <-> [B, F, H*W, C]."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        b, c, f, h, w = x.shape
        out = self.fn(x.permute(0, 2, 3, 4, 1).reshape(b, f, h * w, c))
        return out.reshape(b, f, h, w, c).permute(0, 4, 1, 2, 3)


class RelativePositionBias(nn.Module):
    """T5 relative position bias over frames: per-head logits [heads, F, F] from bucketed offsets."""

    def __init__(self, heads, num_buckets=BUCKETS, max_distance=32):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def buckets(self, frames: int, device=None) -> torch.Tensor:
        """Bucket of every (query i, key j) pair [F, F]: half the buckets per sign of i - j, exact below
        num_buckets / 4, log-spaced up to max_distance beyond."""
        positions = torch.arange(frames, dtype=torch.long, device=device)
        offset = positions[:, None] - positions[None, :]
        half = self.num_buckets // 2
        exact = half // 2
        bucket = (offset < 0).long() * half
        distance = offset.abs()
        spread = (torch.log(distance.float() / exact) / math.log(self.max_distance / exact) * (half - exact)).long()
        far = torch.clamp(exact + spread, max=half - 1)
        return bucket + torch.where(distance < exact, distance, far)

    def forward(self, frames: int, device=None) -> torch.Tensor:
        return self.relative_attention_bias(self.buckets(frames, device)).permute(2, 0, 1)


def sinusoidal_embedding(time: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    frequencies = torch.exp(torch.arange(half, device=time.device) * -(math.log(10000) / (half - 1)))
    angles = time.float()[:, None] * frequencies[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, time):
        return sinusoidal_embedding(time, self.dim)


# ---------------------------------------------------------------------------------------------------
# the network


class VDPUnet3D(nn.Module):
    """video-diffusion-pytorch's Unet3D (inference path): epsilon from noisy pixels, timesteps and a condition."""

    def __init__(self, config: VDPConfig):
        super().__init__()
        self.config = config
        dim, heads, norm, groups = config.dim, config.attn_heads, config.norm, config.resnet_groups
        init_dim = config.init_dim or dim
        rotary = RotaryEmbedding(min(32, config.attn_dim_head))  # one instance, shared by every temporal attention

        def temporal_attention(width):
            return Residual(PreNorm(width, OverFrames(Attention(width, heads, config.attn_dim_head, rotary))))

        def spatial_linear_attention(width):
            if not config.use_sparse_linear_attn:
                return nn.Identity()
            return Residual(PreNorm(width, SpatialLinearAttention(width, heads)))

        self.time_rel_pos_bias = RelativePositionBias(heads)
        pad = config.init_kernel_size // 2
        self.init_conv = nn.Conv3d(
            config.channels, init_dim, (1, config.init_kernel_size, config.init_kernel_size), padding=(0, pad, pad)
        )
        self.init_temporal_attn = temporal_attention(init_dim)

        time_dim = dim * 4
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim))
        self.null_cond_emb = nn.Parameter(torch.randn(1, config.cond_dim)) if config.cond_dim else None
        emb_dim = time_dim + (config.cond_dim or 0)

        dims = [init_dim, *(dim * m for m in config.dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        last = len(in_out) - 1
        self.downs = nn.ModuleList(
            nn.ModuleList([
                ResnetBlock(d_in, d_out, norm, groups, emb_dim),
                ResnetBlock(d_out, d_out, norm, groups, emb_dim),
                spatial_linear_attention(d_out),
                temporal_attention(d_out),
                nn.Conv3d(d_out, d_out, (1, 4, 4), (1, 2, 2), (0, 1, 1)) if level < last else nn.Identity(),
            ])
            for level, (d_in, d_out) in enumerate(in_out)
        )
        mid = dims[-1]
        self.mid_block1 = ResnetBlock(mid, mid, norm, groups, emb_dim)
        self.mid_spatial_attn = Residual(PreNorm(mid, OverPixels(Attention(mid, heads, SPATIAL_DIM_HEAD))))
        self.mid_temporal_attn = temporal_attention(mid)
        self.mid_block2 = ResnetBlock(mid, mid, norm, groups, emb_dim)
        self.ups = nn.ModuleList(
            nn.ModuleList([
                ResnetBlock(d_out * 2, d_in, norm, groups, emb_dim),
                ResnetBlock(d_in, d_in, norm, groups, emb_dim),
                spatial_linear_attention(d_in),
                temporal_attention(d_in),
                nn.ConvTranspose3d(d_in, d_in, (1, 4, 4), (1, 2, 2), (0, 1, 1)) if level < last else nn.Identity(),
            ])
            for level, (d_in, d_out) in enumerate(reversed(in_out))
        )
        self.final_conv = nn.Sequential(ResnetBlock(dim * 2, dim, norm, groups), nn.Conv3d(dim, config.out_dim or config.channels, 1))

    def forward(self, x: torch.Tensor, time: torch.Tensor, cond: torch.Tensor | None = None,
                focus_present_mask: torch.Tensor | None = None, prob_focus_present: float = 0.0) -> torch.Tensor:
        """x [B, C, F, H, W] noisy pixels, time [B] timesteps, cond [B, cond_dim] (models with cond_dim only).

        focus_present_mask [B] (bool): samples whose temporal attentions (all but the first, as in the original) see
        only their own frame, i.e. a video of independent images (image + video co-training). Without it, each sample
        is masked with probability `prob_focus_present` (drawn from torch's global generator as the original does;
        0 and 1 draw nothing).
        """
        if self.null_cond_emb is not None and cond is None:
            raise ValueError(f"this model is conditioned (cond_dim {self.config.cond_dim}): pass cond, or its null_cond_emb")
        if focus_present_mask is None:
            focus_present_mask = _probability_mask(x.shape[0], prob_focus_present, x.device)
        elif tuple(focus_present_mask.shape) != (x.shape[0],):
            raise ValueError(f"focus_present_mask has shape {tuple(focus_present_mask.shape)}; expected ({x.shape[0]},), one flag per sample")
        pos_bias = self.time_rel_pos_bias(x.shape[2], x.device).to(x.dtype)
        x = self.init_temporal_attn(self.init_conv(x), pos_bias=pos_bias)
        first = x
        emb = self.time_mlp[1:](self.time_mlp[0](time).to(x.dtype))
        if self.null_cond_emb is not None:
            emb = torch.cat((emb, cond.to(emb.dtype)), dim=-1)

        skips = []
        for block1, block2, spatial_attn, temporal_attn, downsample in self.downs:
            x = spatial_attn(block2(block1(x, emb), emb))
            x = temporal_attn(x, pos_bias=pos_bias, focus_present_mask=focus_present_mask)
            skips.append(x)
            x = downsample(x)
        x = self.mid_spatial_attn(self.mid_block1(x, emb))
        x = self.mid_block2(self.mid_temporal_attn(x, pos_bias=pos_bias, focus_present_mask=focus_present_mask), emb)
        for block1, block2, spatial_attn, temporal_attn, upsample in self.ups:
            x = torch.cat((x, skips.pop()), dim=1)
            x = spatial_attn(block2(block1(x, emb), emb))
            x = upsample(temporal_attn(x, pos_bias=pos_bias, focus_present_mask=focus_present_mask))
        return self.final_conv(torch.cat((x, first), dim=1))


def _probability_mask(batch: int, probability: float, device) -> torch.Tensor:
    """The original's prob_mask_like: all True at 1, all False at 0, else uniform draws below `probability`."""
    if probability >= 1:
        return torch.ones(batch, dtype=torch.bool, device=device)
    if probability <= 0:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    return torch.zeros(batch, device=device).float().uniform_(0, 1) < probability


# ---------------------------------------------------------------------------------------------------
# behind the Denoiser interface


class VDPDenoiser(Denoiser):
    """A video-diffusion-pytorch Unet3D as a pixel-space Denoiser.

    Latents are pixels in [-1, 1] ([B, channels, T, H, W], downscale 1), and the loop clips the clean estimate to
    that range every step (`sample_range`), as the original sampler does. Text conditioning arrives as the
    samplers' context [B, tokens, cond_dim]; the model takes one vector per sample, the mean over the tokens (a
    CONDITIONING from LongVideoVDPCondition has one token). Classifier-free guidance is the loop's
    null + cfg * (cond - null) with the negative set to the model's `null_cond_emb` (LongVideoVDPCondition, mode
    null). Unconditional models (no cond_dim) ignore the context: set cfg to 1.
    """

    downscale = 1
    sample_range = 1.0
    noise_layout = "video"  # step noise in [B, C, T, H, W] order, as GaussianDiffusion.p_sample's randn_like

    def __init__(self, network: VDPUnet3D, betas: torch.Tensor):
        self.network = network
        self.managed = ManagedModule(network)
        self.config = network.config
        self.scheduler_config = scheduler_config(betas)
        self.latent_channels = self.config.channels
        self.context_width = self.config.cond_dim or 0

    @property
    def null_condition(self) -> torch.Tensor | None:
        """The unconditional vector [1, cond_dim] (float32, CPU), or None for unconditional models."""
        emb = self.network.null_cond_emb
        return None if emb is None else emb.detach().float().cpu().clone()

    def with_temporal_attention(self, scope):
        raise ValueError(
            "temporal attention scopes are not available for video-diffusion-pytorch models: their temporal attention "
            "carries its own relative position bias; leave LongVideoTemporalAttention out (or use mode full on UNet3D models)"
        )

    def load(self) -> torch.device:
        return self.managed.load()

    def __call__(self, latents, timestep, context, known=None):
        if known is not None:
            raise ValueError("a video-diffusion-pytorch model does not take known frames: use frame conditioning 'replace' or 'guidance'")
        height, width = latents.shape[-2:]
        multiple = self.config.size_multiple
        if height % multiple or width % multiple:
            raise ValueError(
                f"this video-diffusion-pytorch model needs frames whose width and height are multiples of {multiple}; "
                f"got {width}x{height}"
            )
        parameter = next(self.network.parameters())
        time = timestep.reshape(-1).to(parameter.device, torch.float32).expand(latents.shape[0])
        cond = None
        if self.config.cond_dim:
            cond = context.to(parameter.device, torch.float32).mean(dim=1).to(parameter.dtype)
        prediction = self.network(latents.to(parameter.device, parameter.dtype), time, cond)
        return prediction.to(latents.dtype)


def null_embedding_looks_untrained(null: torch.Tensor, twin: torch.Tensor | None = None) -> bool:
    """Whether `null_cond_emb` still looks like its random N(0, 1) initialisation.

    The original trainer never drops the condition, so unless training passed null_cond_prob the vector gets no
    gradient and stays exactly as drawn. `twin` is the same vector from the other copy of a Trainer checkpoint
    (model vs ema), given only when the two copies differ elsewhere (EMA has started): a trained vector then differs
    too, an untrained one cannot. Without a twin, the vector is tested for N(0, 1) statistics (mean and spread within 4 standard errors).
    """
    values = null.detach().double().flatten()
    if twin is not None and torch.equal(values, twin.detach().double().flatten()):
        return True
    n = values.numel()
    if n < 16:
        return False
    mean_ok = values.mean().abs() < 4 / math.sqrt(n)
    std_ok = (values.std() - 1).abs() < 4 / math.sqrt(2 * n)
    return bool(mean_ok and std_ok)
