"""Temporal attention over frames that scales to long videos.

UNet3D's temporal attention (`transformer_in` and every `temp_attentions` block) runs, for every pixel,
self-attention over the T frames: hidden states [pixels, T, channels]. These scopes replace only that
attention step; the projections stay the model's own, and spatial and text attention are untouched.

- FullAttention: PyTorch's fused scaled-dot-product attention over all frames (what diffusers does).
- WindowAttention: frame i sees frames i-w//2 .. i+w//2, plus optional anchor frames (frame 0, keyframes).
- DualScopeAttention (Video-Infinity): a local window of +-padding frames plus a global set of frames at a
  fixed stride over the whole video, with logit biases switched by the timestep and optional key-count
  scaling. Keys beyond the video's ends do not exist and are masked (the reference code zero-fills them).

Windowed scopes process the queries in blocks: a block of `block_size` queries attends only to the keys
its window can reach plus the extra frames, so memory is O(T * (window + extra)); no T x T mask or score
matrix is ever built once T exceeds the block size.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FullAttention:
    """Every frame attends to every frame."""

    def attend(self, query, key, value, timestep: float):
        return F.scaled_dot_product_attention(query, key, value)


@dataclass(frozen=True)
class BandedAttention:
    """Shared machinery: a band of +-`half` frames around each query plus extra key frames for every query.

    Subclasses say which extra frames, whether an extra frame inside the band is shown once or twice,
    which logit biases apply at a timestep, and whether the scale follows the visible key count.
    """

    block_size: int = 32

    def band_half_width(self) -> int:
        raise NotImplementedError

    def extra_frames(self, frames: int) -> list[int]:
        return []

    def extra_frames_repeat_band(self) -> bool:
        return False

    def biases(self, timestep: float) -> tuple[float, float]:
        """(band bias, extra bias) added to the logits."""
        return 0.0, 0.0

    def scales_with_key_count(self) -> bool:
        return False

    def attend(self, query, key, value, timestep: float):
        extra = torch.tensor(sorted(set(self.extra_frames(query.shape[-2]))), dtype=torch.long, device=query.device)
        return self.attend_with_context(
            query, key, value, timestep, key_offset=0,
            extra_key=key.index_select(-2, extra), extra_value=value.index_select(-2, extra), extra_positions=extra,
        )

    def attend_with_context(self, query, key, value, timestep: float, *, key_offset: int, extra_key, extra_value,
                            extra_positions):
        """Attention of `query` frames to keys that reach beyond them, plus extra keys given from outside.

        key/value hold `key_offset` frames before the query frames (query i is key frame i + key_offset) and may
        hold frames after them: the halos of a clip inside a longer video. extra_key/extra_value are the extra frames
        (e.g. the global frames gathered from every clip); extra_positions their frame positions counted like the
        queries, used to hide extras inside the band when the band is not repeated.
        """
        frames, key_frames = query.shape[-2], key.shape[-2]
        half = self.band_half_width()
        extra_positions = torch.as_tensor(extra_positions, dtype=torch.long, device=query.device)
        band_bias, extra_bias = self.biases(timestep)
        block = max(self.block_size, 1)
        output = torch.empty_like(query)
        for start in range(0, frames, block):
            stop = min(start + block, frames)
            first, last = max(0, start + key_offset - half), min(key_frames, stop + key_offset + half)
            keys = torch.cat([key[..., first:last, :], extra_key], dim=-2)
            values = torch.cat([value[..., first:last, :], extra_value], dim=-2)
            bias, visible = self._block_bias(start, stop, first - key_offset, last - key_offset, extra_positions, half,
                                             band_bias, extra_bias, query.dtype)
            block_query = query[..., start:stop, :]
            if self.scales_with_key_count():
                scale = visible.to(torch.float32).log() / (math.log(16) * math.sqrt(query.shape[-1]))
                output[..., start:stop, :] = F.scaled_dot_product_attention(
                    block_query * scale[:, None].to(query.dtype), keys, values, attn_mask=bias, scale=1.0
                )
            else:
                # A block that sees every key with one bias is plain attention (a constant logit shift changes nothing).
                plain = bool(torch.isfinite(bias).all()) and bool((bias == bias[0, 0]).all())
                output[..., start:stop, :] = F.scaled_dot_product_attention(block_query, keys, values, attn_mask=None if plain else bias)
        return output

    def _block_bias(self, start, stop, first, last, extra, half, band_bias, extra_bias, dtype):
        """The additive logit bias [queries, band keys + extra keys] of one block, and each row's visible key count.

        Queries are frames start..stop-1, band keys frames first..last-1 and extra keys frames `extra`, all counted alike.
        """
        device = extra.device
        rows = torch.arange(start, stop, device=device)[:, None]
        band_keys = torch.arange(first, last, device=device)[None, :]
        band_visible = (band_keys - rows).abs() <= half
        extra_visible = torch.ones(stop - start, len(extra), dtype=torch.bool, device=device)
        if not self.extra_frames_repeat_band():
            extra_visible &= (extra[None, :] - rows).abs() > half
        visible = torch.cat([band_visible, extra_visible], dim=1)
        values = torch.cat([torch.full_like(band_visible, band_bias, dtype=dtype),
                            torch.full_like(extra_visible, extra_bias, dtype=dtype)], dim=1)
        return values.masked_fill(~visible, float("-inf")), visible.sum(dim=1)


@dataclass(frozen=True)
class WindowAttention(BandedAttention):
    """Frame i attends to frames within +-window//2 (lxj616 trained with window 5), plus anchor frames."""

    window: int = 5
    anchor_first: bool = False
    anchor_frames: tuple[int, ...] = ()

    def band_half_width(self) -> int:
        return self.window // 2

    def extra_frames(self, frames: int) -> list[int]:
        anchors = {0} if self.anchor_first else set()
        anchors.update(i for i in self.anchor_frames if 0 <= i < frames)
        return sorted(anchors)


@dataclass(frozen=True)
class DualScopeAttention(BandedAttention):
    """Video-Infinity's dual-scope attention (reference/video_infinity.md section 2).

    Local keys: frames within +-padding. Global keys: `global_frames` frames at a fixed stride over the
    whole video, the same for every query, also when they lie inside the local window (as in the
    reference). Biases: below `local_phase_t` the local/global logits get the local-phase biases; at or
    above `global_phase_t` they get the global-phase biases (both apply when the phases overlap).
    token_num_scale multiplies the scale by log16 of the row's visible key count.
    """

    padding: int = 8
    global_frames: int = 16
    local_phase_t: float = 800.0
    local_phase_local_bias: float = 10.0
    local_phase_global_bias: float = 0.0
    global_phase_t: float = 800.0
    global_phase_local_bias: float = 0.0
    global_phase_global_bias: float = 10.0
    token_num_scale: bool = False

    def band_half_width(self) -> int:
        return self.padding

    def extra_frames(self, frames: int) -> list[int]:
        return global_frame_indices(frames, self.global_frames)

    def extra_frames_repeat_band(self) -> bool:
        return True

    def biases(self, timestep: float) -> tuple[float, float]:
        local = global_ = 0.0
        if timestep < self.local_phase_t:
            local += self.local_phase_local_bias
            global_ += self.local_phase_global_bias
        if timestep >= self.global_phase_t:
            local += self.global_phase_local_bias
            global_ += self.global_phase_global_bias
        return local, global_

    def scales_with_key_count(self) -> bool:
        return self.token_num_scale


def global_frame_indices(frames: int, count: int) -> list[int]:
    """`count` frames at a fixed stride over `frames` frames, starting at frame 0."""
    if count <= 0:
        return []
    stride = max(frames // count, 1)
    return list(range(0, frames, stride))[:count]


class TemporalAttentionProcessor:
    """A diffusers attention processor for the temporal self-attention layers, using `scope` to attend."""

    def __init__(self, scope, timestep: float):
        self.scope = scope
        self.timestep = timestep

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("temporal attention scopes apply to frame self-attention only")
        batch, frames, _ = hidden_states.shape
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads

        def heads(x):
            return x.view(batch, frames, attn.heads, head_dim).transpose(1, 2)

        attended = self.attend(heads(query), heads(key), heads(value))
        attended = attended.transpose(1, 2).reshape(batch, frames, attn.heads * head_dim).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](attended))

    def attend(self, query, key, value):
        """Attention over frames of per-head query/key/value [batch, heads, frames, head_dim]."""
        return self.scope.attend(query, key, value, self.timestep)


def temporal_attention_names(unet) -> list[str]:
    """Names (as in `unet.attn_processors`) of the temporal self-attention layers of a UNet3DConditionModel."""
    return [name for name in unet.attn_processors if name.startswith("transformer_in.") or ".temp_attentions." in name]
