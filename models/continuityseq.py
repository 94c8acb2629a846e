"""ContinuitySeq's two-stream video UNet (checkpoint `b-f/ContinuitySeq-A`), and its Denoiser.

The network is diffusers' UNet3D (ModelScope text-to-video) with a second, attention-free stream for clean
conditioning latents [B, C, Fc, h, w] that runs beside the noisy main stream [B, C, F, h, w]:

- every convolution is a pair: `spatial_conv` on the main stream, `conditioning_conv` (same shape) on the
  conditioning stream, each applied per frame;
- with `use_conditioning_norm`, and only when F > 1, each conv pair ends in a `conditioning_block`: the last
  conditioning frame c is injected into every main frame h as h + SiLU(Wg h) * c + SiLU(Wb h), gamma and beta
  being computed per pixel from the MAIN stream (Wg = 0, bias 1 and Wb = 0, bias 0 at initialisation);
- resnets normalise and time-embed the conditioning stream with their own `c_norm1/2` and `time_c_emb_proj`
  (the same diffusion-timestep embedding, repeated over the Fc conditioning frames); it keeps its own skips;
- after the temporal attention of every attention layer, a `conditioning_attentions` transformer lets every
  main frame cross-attend, at each pixel, to the conditioning frames. When Fc < F the conditioning frames are
  left-padded with zeros to F and a padding mask is added in the second attention. The original builds that
  mask INVERTED (content frames get -10000, padding frames 0, so that attention sees only the padding); the
  checkpoint was trained that way, so it is the default here. `corrected_padding_mask=True` masks the padding
  instead. The first attention of that block is unmasked in both cases, as in the original.
- with F == 1 every temporal part is skipped (transformer_in, temporal convs and attentions, conditioning
  blocks and conditioning attentions), so the conditioning frames have no effect at all.

Parameter names and shapes are those of the original (bfasenfest/continuity-seq, models/*.py, written against
diffusers 0.18.2), so its state dict loads strictly. The pieces that are plain diffusers UNet3D parts
(transformer_in, temporal convs, spatial and temporal transformers, time embedding) are diffusers' own modules.
"""

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import AttentionMixin, BasicTransformerBlock
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import TemporalConvLayer
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel
from torch import nn

from .denoiser import UNet3DDenoiser

PADDING_BIAS = -10000.0
# The original hard-codes 32 groups in the temporal convs and in transformer_in, whatever norm_num_groups says.
TEMPORAL_GROUPS = 32


def _frames_last(x: torch.Tensor, frames: int) -> torch.Tensor:
    """[(B F), C, H, W] -> [B, C, F, H, W]."""
    return x.reshape(-1, frames, *x.shape[1:]).transpose(1, 2)


def _frames_folded(x: torch.Tensor) -> torch.Tensor:
    """[B, C, F, H, W] -> [(B F), C, H, W]."""
    return x.transpose(1, 2).reshape(-1, x.shape[1], *x.shape[3:])


class ConditioningBlock(nn.Module):
    """h + SiLU(gamma(h)) * c_last + SiLU(beta(h)), per pixel over channels; c_last is the last conditioning frame."""

    def __init__(self, channels: int):
        super().__init__()
        self.conditioning_norm = nn.ModuleDict({
            "gamma": nn.Sequential(nn.Linear(channels, channels), nn.SiLU()),
            "beta": nn.Sequential(nn.Linear(channels, channels), nn.SiLU()),
        })
        nn.init.zeros_(self.conditioning_norm.gamma[0].weight)
        nn.init.ones_(self.conditioning_norm.gamma[0].bias)
        nn.init.zeros_(self.conditioning_norm.beta[0].weight)
        nn.init.zeros_(self.conditioning_norm.beta[0].bias)

    def forward(self, hidden: torch.Tensor, conditioning: torch.Tensor, frames: int) -> torch.Tensor:
        batch = hidden.shape[0] // frames
        last = conditioning.reshape(batch, -1, *conditioning.shape[1:])[:, -1]
        last = last.repeat_interleave(frames, dim=0)
        channels_last = hidden.permute(0, 2, 3, 1)
        gamma = self.conditioning_norm.gamma(channels_last).permute(0, 3, 1, 2)
        beta = self.conditioning_norm.beta(channels_last).permute(0, 3, 1, 2)
        return hidden + (gamma * last + beta)


class ConvPair(nn.Module):
    """One convolution per stream, then (F > 1) the conditioning block. The original calls this a Conditioner."""

    def __init__(self, channels: int, out_channels: int, use_conditioning_norm: bool, kernel_size: int, **conv):
        super().__init__()
        self.spatial_conv = nn.Conv2d(channels, out_channels, kernel_size, **conv)
        self.conditioning_conv = nn.Conv2d(channels, out_channels, kernel_size, **conv)
        self.conditioning_block = ConditioningBlock(out_channels) if use_conditioning_norm else None

    def forward(self, hidden, conditioning, frames):
        hidden = self.spatial_conv(hidden)
        conditioning = self.conditioning_conv(conditioning)
        if self.conditioning_block is not None and frames > 1:
            hidden = self.conditioning_block(hidden, conditioning, frames)
        return hidden, conditioning


class ResnetPair(nn.Module):
    """diffusers' ResnetBlock2D on both streams, with separate norms and time projections for the conditioning one."""

    def __init__(self, channels, out_channels, temb_channels, groups, eps, output_scale_factor, use_conditioning_norm):
        super().__init__()
        self.output_scale_factor = output_scale_factor
        self.norm1 = nn.GroupNorm(groups, channels, eps=eps)
        self.c_norm1 = nn.GroupNorm(groups, channels, eps=eps)
        self.conv1 = ConvPair(channels, out_channels, use_conditioning_norm, 3, stride=1, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.time_c_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.c_norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = ConvPair(out_channels, out_channels, use_conditioning_norm, 3, stride=1, padding=1)
        self.conv_shortcut = None
        if channels != out_channels:
            self.conv_shortcut = ConvPair(channels, out_channels, use_conditioning_norm, 1, stride=1, padding=0)

    def forward(self, hidden, conditioning, hidden_emb, conditioning_emb, frames):
        h, c = F.silu(self.norm1(hidden)), F.silu(self.c_norm1(conditioning))
        h, c = self.conv1(h, c, frames)
        h = h + self.time_emb_proj(F.silu(hidden_emb))[:, :, None, None]
        c = c + self.time_c_emb_proj(F.silu(conditioning_emb))[:, :, None, None]
        h, c = F.silu(self.norm2(h)), F.silu(self.c_norm2(c))
        h, c = self.conv2(h, c, frames)
        if self.conv_shortcut is not None:
            hidden, conditioning = self.conv_shortcut(hidden, conditioning, frames)
        return (hidden + h) / self.output_scale_factor, (conditioning + c) / self.output_scale_factor


class Downsample(nn.Module):
    def __init__(self, channels, use_conditioning_norm, padding):
        super().__init__()
        self.padding = padding
        self.conv = ConvPair(channels, channels, use_conditioning_norm, 3, stride=2, padding=padding)

    def forward(self, hidden, conditioning, frames):
        if self.padding == 0:
            # As in the original (and diffusers), only the main stream gets the asymmetric pad.
            hidden = F.pad(hidden, (0, 1, 0, 1))
        return self.conv(hidden, conditioning, frames)


class Upsample(nn.Module):
    def __init__(self, channels, use_conditioning_norm):
        super().__init__()
        self.conv = ConvPair(channels, channels, use_conditioning_norm, 3, padding=1)

    def forward(self, hidden, conditioning, frames, size=None):
        def up(x):
            dtype = x.dtype
            x = x.float() if dtype == torch.bfloat16 else x  # nearest upsampling has no bf16 kernel everywhere
            x = F.interpolate(x, size=size, scale_factor=None if size is not None else 2.0, mode="nearest")
            return x.to(dtype)

        return self.conv(up(hidden), up(conditioning), frames)


class ConditioningAttention(nn.Module):
    """Temporal cross-attention, at every pixel, from the F main frames to the (zero-left-padded) conditioning frames.

    One BasicTransformerBlock with only_cross_attention: attn1 attends to the conditioning frames unmasked, attn2
    with the padding mask (inverted as in the original unless `corrected`). GroupNorm statistics span all frames,
    padding included.
    """

    def __init__(self, channels: int, heads: int, head_dim: int, groups: int):
        super().__init__()
        inner = heads * head_dim
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.cond_norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.cond_proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, head_dim, cross_attention_dim=inner, only_cross_attention=True)]
        )
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, hidden, conditioning, frames: int, corrected: bool = False):
        batch = hidden.shape[0] // frames
        hidden, conditioning = _frames_last(hidden, frames), _frames_last(conditioning, conditioning.shape[0] // batch)
        _, channels, _, height, width = hidden.shape
        mask = None
        padding = frames - conditioning.shape[2]
        if padding > 0:
            conditioning = torch.cat([conditioning.new_zeros(batch, channels, padding, height, width), conditioning], dim=2)
            is_padding = torch.arange(frames, device=hidden.device) < padding
            masked = is_padding if corrected else ~is_padding
            bias = torch.where(masked, PADDING_BIAS, 0.0).to(hidden.dtype)
            mask = bias.expand(batch * height * width, 1, frames)

        def tokens(x):  # [B, C, F, H, W] -> [(B H W), F, C]
            return x.permute(0, 3, 4, 2, 1).reshape(batch * height * width, x.shape[2], x.shape[1])

        residual = hidden
        h = self.proj_in(tokens(self.norm(hidden)))
        c = self.cond_proj_in(tokens(self.cond_norm(conditioning)))
        for block in self.transformer_blocks:
            h = block(h, encoder_hidden_states=c, encoder_attention_mask=mask)
        h = self.proj_out(h).reshape(batch, height, width, frames, channels).permute(0, 4, 3, 1, 2)
        return _frames_folded(h + residual)


class AttentionLayers(nn.Module):
    """The attention lists of a block: spatial + text, temporal self-attention, conditioning attention."""

    def make_attention(self, count, channels, head_dim, cross_attention_dim, groups):
        heads = channels // head_dim
        self.attentions = nn.ModuleList([
            Transformer2DModel(heads, head_dim, in_channels=channels, num_layers=1, cross_attention_dim=cross_attention_dim,
                               norm_num_groups=groups, use_linear_projection=True)
            for _ in range(count)
        ])
        self.temp_attentions = nn.ModuleList([
            TransformerTemporalModel(heads, head_dim, in_channels=channels, num_layers=1,
                                     cross_attention_dim=cross_attention_dim, norm_num_groups=groups)
            for _ in range(count)
        ])
        self.conditioning_attentions = nn.ModuleList(
            [ConditioningAttention(channels, heads, head_dim, groups) for _ in range(count)]
        )

    def attend(self, index, hidden, conditioning, context, frames, corrected):
        hidden = self.attentions[index](hidden, encoder_hidden_states=context, return_dict=False)[0]
        if frames > 1:
            hidden = self.temp_attentions[index](hidden, num_frames=frames, return_dict=False)[0]
            hidden = self.conditioning_attentions[index](hidden, conditioning, frames, corrected)
        return hidden


def _temporal_convs(count, channels):
    return nn.ModuleList([TemporalConvLayer(channels, channels, dropout=0.1, norm_num_groups=TEMPORAL_GROUPS)
                          for _ in range(count)])


class DownBlock(AttentionLayers):
    """CrossAttnDownBlock3D (with attention) or DownBlock3D: resnet, temporal conv[, attentions] per layer."""

    def __init__(self, layers, channels, out_channels, temb, groups, eps, add_downsample, padding, use_norm,
                 attention=False, head_dim=None, cross_attention_dim=None):
        super().__init__()
        self.has_attention = attention
        self.resnets = nn.ModuleList([
            ResnetPair(channels if i == 0 else out_channels, out_channels, temb, groups, eps, 1.0, use_norm)
            for i in range(layers)
        ])
        self.temp_convs = _temporal_convs(layers, out_channels)
        if attention:
            self.make_attention(layers, out_channels, head_dim, cross_attention_dim, groups)
        self.downsamplers = nn.ModuleList([Downsample(out_channels, use_norm, padding)]) if add_downsample else None

    def forward(self, hidden, conditioning, hidden_emb, conditioning_emb, context, frames, corrected):
        skips, conditioning_skips = (), ()
        for index, (resnet, temp_conv) in enumerate(zip(self.resnets, self.temp_convs)):
            hidden, conditioning = resnet(hidden, conditioning, hidden_emb, conditioning_emb, frames)
            hidden = temp_conv(hidden, num_frames=frames) if frames > 1 else hidden
            if self.has_attention:
                hidden = self.attend(index, hidden, conditioning, context, frames, corrected)
            skips, conditioning_skips = skips + (hidden,), conditioning_skips + (conditioning,)
        if self.downsamplers is not None:
            hidden, conditioning = self.downsamplers[0](hidden, conditioning, frames)
            skips, conditioning_skips = skips + (hidden,), conditioning_skips + (conditioning,)
        return hidden, conditioning, skips, conditioning_skips


class UpBlock(AttentionLayers):
    """CrossAttnUpBlock3D (with attention) or UpBlock3D; both streams concatenate their own skips."""

    def __init__(self, layers, channels, previous_channels, out_channels, temb, groups, eps, add_upsample, use_norm,
                 attention=False, head_dim=None, cross_attention_dim=None):
        super().__init__()
        self.has_attention = attention
        self.resnets = nn.ModuleList([
            ResnetPair((previous_channels if i == 0 else out_channels) + (channels if i == layers - 1 else out_channels),
                       out_channels, temb, groups, eps, 1.0, use_norm)
            for i in range(layers)
        ])
        self.temp_convs = _temporal_convs(layers, out_channels)
        if attention:
            self.make_attention(layers, out_channels, head_dim, cross_attention_dim, groups)
        self.upsamplers = nn.ModuleList([Upsample(out_channels, use_norm)]) if add_upsample else None

    def forward(self, hidden, conditioning, skips, conditioning_skips, hidden_emb, conditioning_emb, context, frames,
                corrected, upsample_size=None):
        for index, (resnet, temp_conv) in enumerate(zip(self.resnets, self.temp_convs)):
            hidden = torch.cat([hidden, skips[-1 - index]], dim=1)
            conditioning = torch.cat([conditioning, conditioning_skips[-1 - index]], dim=1)
            hidden, conditioning = resnet(hidden, conditioning, hidden_emb, conditioning_emb, frames)
            hidden = temp_conv(hidden, num_frames=frames) if frames > 1 else hidden
            if self.has_attention:
                hidden = self.attend(index, hidden, conditioning, context, frames, corrected)
        if self.upsamplers is not None:
            hidden, conditioning = self.upsamplers[0](hidden, conditioning, frames, upsample_size)
        return hidden, conditioning


class MidBlock(AttentionLayers):
    """resnet, temporal conv, then attentions, resnet, temporal conv."""

    def __init__(self, channels, temb, groups, eps, output_scale_factor, use_norm, head_dim, cross_attention_dim):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetPair(channels, channels, temb, groups, eps, output_scale_factor, use_norm) for _ in range(2)]
        )
        self.temp_convs = _temporal_convs(2, channels)
        self.make_attention(1, channels, head_dim, cross_attention_dim, groups)

    def forward(self, hidden, conditioning, hidden_emb, conditioning_emb, context, frames, corrected):
        hidden, conditioning = self.resnets[0](hidden, conditioning, hidden_emb, conditioning_emb, frames)
        hidden = self.temp_convs[0](hidden, num_frames=frames) if frames > 1 else hidden
        hidden = self.attend(0, hidden, conditioning, context, frames, corrected)
        hidden, conditioning = self.resnets[1](hidden, conditioning, hidden_emb, conditioning_emb, frames)
        hidden = self.temp_convs[1](hidden, num_frames=frames) if frames > 1 else hidden
        return hidden, conditioning


class ContinuitySeqUNet(ModelMixin, AttentionMixin, ConfigMixin):
    """The two-stream UNet. forward(sample [B, C, F, h, w], conditioning_hidden_states [B, C, Fc, h, w] (clean),
    timestep, encoder_hidden_states [B, tokens, width]) -> the prediction for `sample`."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        sample_size=None,
        in_channels: int = 4,
        out_channels: int = 4,
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        use_conditioning_norm: bool = True,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1024,
        attention_head_dim=64,
    ):
        super().__init__()
        if len(down_block_types) != len(up_block_types) or len(block_out_channels) != len(down_block_types):
            raise ValueError("down_block_types, up_block_types and block_out_channels must have the same length")
        for name in (*down_block_types, *up_block_types):
            if name not in ("CrossAttnDownBlock3D", "DownBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"):
                raise ValueError(f"block type {name} is not one of ContinuitySeq's")
        if not isinstance(attention_head_dim, int):
            raise ValueError("ContinuitySeq's transformer_in needs one integer attention_head_dim")
        channels = list(block_out_channels)
        temb = channels[0] * 4
        use_norm = use_conditioning_norm

        self.conv_in = ConvPair(in_channels, channels[0], use_norm, 3, padding=1)
        self.time_proj = Timesteps(channels[0], True, 0)
        self.time_embedding = TimestepEmbedding(channels[0], temb, act_fn=act_fn)
        self.transformer_in = TransformerTemporalModel(num_attention_heads=8, attention_head_dim=attention_head_dim,
                                                       in_channels=channels[0], num_layers=1, norm_num_groups=TEMPORAL_GROUPS)
        common = {"temb": temb, "groups": norm_num_groups, "eps": norm_eps, "use_norm": use_norm,
                  "head_dim": attention_head_dim, "cross_attention_dim": cross_attention_dim}
        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(down_block_types):
            self.down_blocks.append(DownBlock(
                layers_per_block, channels[max(i - 1, 0)], channels[i], add_downsample=i < len(channels) - 1,
                padding=downsample_padding, attention=kind.startswith("CrossAttn"), **common,
            ))
        self.mid_block = MidBlock(channels[-1], temb, norm_num_groups, norm_eps, mid_block_scale_factor, use_norm,
                                  attention_head_dim, cross_attention_dim)
        reversed_channels = channels[::-1]
        self.up_blocks = nn.ModuleList()
        for i, kind in enumerate(up_block_types):
            self.up_blocks.append(UpBlock(
                layers_per_block + 1, reversed_channels[min(i + 1, len(channels) - 1)], reversed_channels[max(i - 1, 0)],
                reversed_channels[i], add_upsample=i < len(channels) - 1, attention=kind.startswith("CrossAttn"), **common,
            ))
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, channels[0], eps=norm_eps)
        self.conv_out = ConvPair(channels[0], out_channels, use_norm, 3, padding=1)

    def forward(self, sample, conditioning_hidden_states, timestep, encoder_hidden_states, corrected_padding_mask=False):
        batch, _, frames, height, width = sample.shape
        conditioning_frames = conditioning_hidden_states.shape[2]
        if conditioning_hidden_states.shape[0] != batch or conditioning_hidden_states.shape[3:] != sample.shape[3:]:
            raise ValueError(f"conditioning latents {tuple(conditioning_hidden_states.shape)} do not match the batch and "
                             f"size of the sample {tuple(sample.shape)}")
        if conditioning_frames < 1:
            raise ValueError("ContinuitySeq needs at least one conditioning frame")
        upsample_factor = 2 ** (len(self.up_blocks) - 1)
        forward_upsample_size = height % upsample_factor != 0 or width % upsample_factor != 0

        timesteps = torch.as_tensor(timestep, device=sample.device)
        timesteps = timesteps.reshape(-1).expand(batch)
        emb = self.time_embedding(self.time_proj(timesteps).to(self.dtype))
        hidden_emb = emb.repeat_interleave(frames, dim=0)
        conditioning_emb = emb.repeat_interleave(conditioning_frames, dim=0)
        context = encoder_hidden_states.repeat_interleave(frames, dim=0)
        corrected = corrected_padding_mask

        hidden, conditioning = self.conv_in(_frames_folded(sample), _frames_folded(conditioning_hidden_states), frames)
        if frames > 1:
            hidden = self.transformer_in(hidden, num_frames=frames, return_dict=False)[0]

        skips, conditioning_skips = (hidden,), (conditioning,)
        for block in self.down_blocks:
            hidden, conditioning, new, new_conditioning = block(hidden, conditioning, hidden_emb, conditioning_emb,
                                                                context, frames, corrected)
            skips, conditioning_skips = skips + new, conditioning_skips + new_conditioning

        hidden, conditioning = self.mid_block(hidden, conditioning, hidden_emb, conditioning_emb, context, frames, corrected)

        for i, block in enumerate(self.up_blocks):
            count = len(block.resnets)
            block_skips, skips = skips[-count:], skips[:-count]
            block_conditioning_skips, conditioning_skips = conditioning_skips[-count:], conditioning_skips[:-count]
            upsample_size = skips[-1].shape[2:] if forward_upsample_size and i < len(self.up_blocks) - 1 else None
            hidden, conditioning = block(hidden, conditioning, block_skips, block_conditioning_skips, hidden_emb,
                                         conditioning_emb, context, frames, corrected, upsample_size)

        hidden = F.silu(self.conv_norm_out(hidden))
        hidden, _ = self.conv_out(hidden, conditioning, frames)
        return _frames_last(hidden, frames)


class ContinuitySeqDenoiser(UNet3DDenoiser):
    """ContinuitySeq behind the Denoiser interface, for frame conditioning `learned` (continuation).

    The continuation loop samples a clip of frames_per_chunk frames whose first k frames are known and hands them
    over as `known` (indices 0..k-1, clean latents). The network then samples only the F = frames_per_chunk - k new
    frames, conditioned on the k clean latents, exactly as ContinuitySeq's `-T F` with k conditioning frames:
    frames_per_chunk = T + k. The returned prediction covers every frame; at the known positions it is zero (those
    frames are replaced by their exact latents at the end of the loop, so what is predicted there never reaches
    the output).

    corrected_padding_mask: False reproduces the checkpoint (inverted padding mask); True masks the padding frames.
    """

    takes_known_frames = True
    requires_known_frames = True

    def __init__(self, unet: ContinuitySeqUNet, scheduler_config: dict, corrected_padding_mask: bool = False):
        super().__init__(unet, scheduler_config)
        self.corrected_padding_mask = corrected_padding_mask

    def __call__(self, latents, timestep, context, known=None):
        if known is None:
            raise ValueError("a ContinuitySeq model continues known frames: give it conditioning frames (continuation "
                             "with method 'learned' from a start image or latent)")
        k = len(known.indices)
        if list(known.indices) != list(range(k)):
            raise ValueError(f"ContinuitySeq conditions on the first frames of the clip: known frame indices must be "
                             f"0..{k - 1}, got {list(known.indices)}")
        if k >= latents.shape[2]:
            raise ValueError(f"all {latents.shape[2]} frames are known: ContinuitySeq needs at least one new frame")
        dtype = self.unet.dtype
        conditioning = known.latents.to(latents.device, dtype).expand(latents.shape[0], -1, -1, -1, -1)
        with self._temporal_processors(timestep):
            new = self.unet(latents[:, :, k:].to(dtype), conditioning, timestep, context.to(latents.device, dtype),
                            corrected_padding_mask=self.corrected_padding_mask)
        prediction = torch.zeros_like(latents)
        prediction[:, :, k:] = new.to(latents.dtype)
        return prediction
