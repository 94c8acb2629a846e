"""Clip-parallel UNet3D: one clip of a longer video per rank, seeing its neighbours through a communicator.

Video-Infinity's idea (reference/video_infinity.md): a video of R x F frames is split into R contiguous clips
and every rank denoises one. Only the layers that mix frames need other clips, and only a little of them:

- TemporalConvLayer (4 stacked (3,1,1) convolutions): the block input gets the neighbours' boundary frames
  (the stack's receptive field, 4 frames a side), the stack runs over the padded clip and the halo is cut off.
- Temporal self-attention (`transformer_in`, `temp_attentions`, attn1 and attn2): keys and values get
  `padding` frames from each neighbour, plus the global frames of the whole video (the same set on every
  rank), and attend through the dual-scope band of attention/temporal.py.
- GroupNorms over frames (in those layers), optionally: statistics over the whole video instead of the clip.

At the two ends of the video there is no neighbour: the halo is empty (not zero frames as in the reference
code), so the convolutions pad as the full-video model does and no zero keys dilute the attention. With the
GroupNorm sync on and padding <= F, each clip's prediction equals that frame range of the full-video model
with DualScopeAttention, up to float rounding.

Reference mode (`reference=True`) computes what Video-Infinity's own plugins compute instead: zero frames as the
halos at the video's two ends (unmasked attention keys and values, conv input frames; so every query keeps
2 * padding + 1 local keys, which token_num_scale counts), a conv halo of 4 frames whatever the layer,
GroupNorm statistics per rank (over the clip and its conv halos), and the global frames picked per rank
(top_k // R frames at a stride over each clip, gathered and cut to top_k) rather than over the whole video.

The network is not forked or edited: `clip_parallel_hooks(unet)` installs, for the duration of a run,
attention processors and forward overrides that consult the exchange of the current call (a ContextVar set
by `ClipDenoiser`), and behave exactly as before when there is none. One installation serves every virtual
rank thread of a process.
"""

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from ..attention.temporal import DualScopeAttention, TemporalAttentionProcessor, global_frame_indices, temporal_attention_names
from .denoiser import Denoiser

_CURRENT_EXCHANGE: ContextVar["ClipExchange | None"] = ContextVar("longvideo_clip_exchange", default=None)
_INSTALLED = "_longvideo_clip_parallel"


@dataclass
class ClipExchange:
    """What one rank's model call needs to reach the other clips.

    comm: a Communicator (sampling/distributed.py): rank, world_size, exchange_halos, all_gather.
    scope: the dual-scope attention (padding = the attention halo, global_frames over the whole video).
    """

    comm: object
    scope: DualScopeAttention
    timestep: float
    sync_group_norm: bool = True
    reference: bool = False

    def halos(self, tensor: torch.Tensor, frames: int, dim: int) -> tuple[torch.Tensor, int]:
        """`tensor` with up to `frames` frames of each neighbour added along `dim`; returns it and the frames added before.

        Where there is no neighbour the halo is empty, or zero frames in reference mode."""
        size = tensor.shape[dim]
        frames = min(frames, size)
        if frames <= 0 or (self.comm.world_size == 1 and not self.reference):
            return tensor, 0
        first, last = tensor.narrow(dim, 0, frames), tensor.narrow(dim, size - frames, frames)
        left, right = self.comm.exchange_halos(first, last) if self.comm.world_size > 1 else (None, None)
        if self.reference:
            left = torch.zeros_like(last) if left is None else left
            right = torch.zeros_like(first) if right is None else right
        parts = [part for part in (left, tensor, right) if part is not None]
        return torch.cat(parts, dim=dim), 0 if left is None else left.shape[dim]

    def global_frames(self, tensor: torch.Tensor, dim: int) -> tuple[torch.Tensor, list[int]]:
        """The whole video's global frames of `tensor` (this clip's frames along `dim`) in video order, gathered from
        every clip, and their positions counted from this clip's first frame."""
        frames, rank, world = tensor.shape[dim], self.comm.rank, self.comm.world_size
        if self.reference:
            chosen = reference_global_frames(frames, self.scope.global_frames, world)
        else:
            chosen = global_frame_indices(frames * world, self.scope.global_frames)
        owned = [[i - r * frames for i in chosen if r * frames <= i < (r + 1) * frames] for r in range(world)]
        if world == 1:
            own = torch.tensor(owned[0], dtype=torch.long, device=tensor.device)
            return tensor.index_select(dim, own), owned[0]
        most = max(len(indices) for indices in owned)
        # Collectives need one shape on every rank: clips owning fewer global frames pad with their frame 0.
        padded = owned[rank] + [0] * (most - len(owned[rank]))
        mine = tensor.index_select(dim, torch.tensor(padded, dtype=torch.long, device=tensor.device))
        gathered = self.comm.all_gather(mine.contiguous())
        selected = torch.cat([part.narrow(dim, 0, len(owned[r])) for r, part in enumerate(gathered)], dim=dim)
        return selected, [i - rank * frames for i in chosen]

    def group_norm(self, norm: torch.nn.GroupNorm, x: torch.Tensor, own: slice) -> torch.Tensor:
        """GroupNorm of x [batch, channels, frames, h, w] with statistics over the own frames of every clip.

        Each clip computes its mean and sum of squared deviations (two-pass, float32) and the clips' figures are
        combined exactly (Chan et al.), in rank order, so every rank normalises with the same whole-video statistics.
        """
        if not self.sync_group_norm or self.comm.world_size == 1:
            # The functional form: norm's own forward may be the override that called this.
            return torch.nn.functional.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        batch, channels = x.shape[:2]
        grouped = x.float().reshape(batch, norm.num_groups, channels // norm.num_groups, *x.shape[2:])
        part = grouped[:, :, :, own]
        count = part[0, 0].numel()
        mean = part.mean(dim=(2, 3, 4, 5))
        squares = (part - mean[..., None, None, None, None]).square().sum(dim=(2, 3, 4, 5))
        stats = self.comm.all_gather(torch.stack([mean, squares]))
        total = count * len(stats)
        mean_all = sum(s[0] for s in stats) / len(stats)
        squares_all = sum(s[1] + count * (s[0] - mean_all).square() for s in stats)
        variance = squares_all / total
        normed = (grouped - mean_all[..., None, None, None, None]) * torch.rsqrt(variance + norm.eps)[..., None, None, None, None]
        normed = normed.reshape(x.shape)
        if norm.affine:
            shape = (1, channels) + (1,) * (x.dim() - 2)
            normed = normed * norm.weight.float().view(shape) + norm.bias.float().view(shape)
        return normed.to(x.dtype)


REFERENCE_CONV_HALO = 4  # Video-Infinity's ConvLayerPlugin.padding: the frames its temporal convolutions exchange


def reference_global_frames(frames: int, count: int, world: int) -> list[int]:
    """Video-Infinity's global frames (AttentionPlugin.get_topk) of a video of `world` clips of `frames` frames:
    count // world frames of every clip at a per-clip stride (only frame 0 when that is 0), in rank order, cut to count."""
    share = count // world
    stride = max(frames // share, 1) if share else frames
    return [r * frames + i for r in range(world) for i in range(0, frames, stride)][:count]


def current_exchange() -> ClipExchange | None:
    return _CURRENT_EXCHANGE.get()


class ClipAttentionProcessor(TemporalAttentionProcessor):
    """Temporal self-attention of one clip: keys/values with the neighbours' halos and the global frames."""

    def __init__(self, original):
        super().__init__(scope=None, timestep=0.0)
        self.original = original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if current_exchange() is None:
            return self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                                 attention_mask=attention_mask, temb=temb, **kwargs)
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)

    def attend(self, query, key, value):
        exchange = current_exchange()
        head_dim = key.shape[-1]
        # Keys and values travel together: one transfer instead of two.
        key_value = torch.cat([key, value], dim=-1)
        padded, offset = exchange.halos(key_value, exchange.scope.padding, dim=-2)
        extra, positions = exchange.global_frames(key_value, dim=-2)
        return exchange.scope.attend_with_context(
            query, padded[..., :head_dim], padded[..., head_dim:], exchange.timestep, key_offset=offset,
            extra_key=extra[..., :head_dim], extra_value=extra[..., head_dim:], extra_positions=positions,
        )


def temporal_conv_halo(layer) -> int:
    """Frames a TemporalConvLayer's output depends on each side: the receptive field of its stacked convolutions."""
    return sum((m.kernel_size[0] // 2) * m.dilation[0] for m in layer.modules() if isinstance(m, torch.nn.Conv3d))


def _temporal_conv_forward(layer, original):
    halo = temporal_conv_halo(layer)

    def forward(hidden_states, num_frames=1):
        exchange = current_exchange()
        if exchange is None:
            return original(hidden_states, num_frames)
        x = hidden_states[None, :].reshape((-1, num_frames) + hidden_states.shape[1:]).permute(0, 2, 1, 3, 4)
        identity = x
        x, before = exchange.halos(x, REFERENCE_CONV_HALO if exchange.reference else halo, dim=2)
        own = slice(before, before + num_frames)
        for block in (layer.conv1, layer.conv2, layer.conv3, layer.conv4):
            for part in block:
                x = exchange.group_norm(part, x, own) if isinstance(part, torch.nn.GroupNorm) else part(x)
        x = identity + x[:, :, own]
        return x.permute(0, 2, 1, 3, 4).reshape((x.shape[0] * x.shape[2], -1) + x.shape[3:])

    return forward


def _frame_norm_forward(norm, original):
    def forward(x):
        exchange = current_exchange()
        return original(x) if exchange is None else exchange.group_norm(norm, x, slice(None))

    return forward


@contextmanager
def clip_parallel_hooks(unet):
    """Make a diffusers UNet3DConditionModel clip-parallel while the block runs (see the module docstring)."""
    from diffusers.models.resnet import TemporalConvLayer
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

    if getattr(unet, _INSTALLED, False):
        raise RuntimeError("this UNet is already running a clip-parallel sampling")
    original_processors = unet.attn_processors
    processors = dict(original_processors)
    for name in temporal_attention_names(unet):
        processors[name] = ClipAttentionProcessor(original_processors[name])
    overridden = []
    for module in unet.modules():
        if isinstance(module, TemporalConvLayer):
            module.forward = _temporal_conv_forward(module, module.forward)
            overridden.append(module)
        elif isinstance(module, TransformerTemporalModel) and isinstance(module.norm, torch.nn.GroupNorm):
            module.norm.forward = _frame_norm_forward(module.norm, module.norm.forward)
            overridden.append(module.norm)
    unet.set_attn_processor(processors)
    setattr(unet, _INSTALLED, True)
    try:
        yield
    finally:
        unet.set_attn_processor(original_processors)
        for module in overridden:
            del module.forward
        setattr(unet, _INSTALLED, False)


class ClipDenoiser(Denoiser):
    """One rank's view of a UNet3DDenoiser: its calls run the clip-parallel layers through `comm`.

    Every call first checks that all ranks are at the same timestep with the same latent shape (lockstep), and
    records the timestep. `device`: the network is already there (worker processes, virtual rank threads); None
    asks the model to load. Needs `clip_parallel_hooks(base.unet)` around the run.
    """

    def __init__(self, base, comm, scope: DualScopeAttention, sync_group_norm: bool = True, device=None, reference: bool = False):
        if getattr(base, "temporal_scope", None) is not None:
            raise ValueError("clip-parallel sampling sets its own temporal attention: give it the model without a temporal scope")
        if reference and sync_group_norm:
            raise ValueError("reference mode keeps GroupNorm statistics per rank, as Video-Infinity: set sync_group_norm off")
        self.base = base
        self.comm = comm
        self.scope = scope
        self.sync_group_norm = sync_group_norm
        self.reference = reference
        self.device = device
        self.latent_channels = base.latent_channels
        self.scheduler_config = base.scheduler_config
        self.timesteps: list[float] = []

    def load(self) -> torch.device:
        return self.base.load() if self.device is None else torch.device(self.device)

    def __call__(self, latents, timestep, context, known=None):
        self._check_lockstep(latents, timestep)
        self.timesteps.append(float(timestep))
        token = _CURRENT_EXCHANGE.set(ClipExchange(self.comm, self.scope, float(timestep), self.sync_group_norm, self.reference))
        try:
            return self.base(latents, timestep, context, known)
        finally:
            _CURRENT_EXCHANGE.reset(token)

    def _check_lockstep(self, latents, timestep) -> None:
        if self.comm.world_size == 1:
            return
        mine = torch.tensor([float(timestep), *latents.shape], dtype=torch.float64, device=self.comm.device)
        states = [state.cpu() for state in self.comm.all_gather(mine)]
        if any(not torch.equal(state, states[0]) for state in states):
            described = ", ".join(f"rank {r}: t={s[0].item():g} shape {tuple(int(v) for v in s[1:].tolist())}"
                                  for r, s in enumerate(states))
            raise RuntimeError(f"clip-parallel ranks are out of step ({described}): every rank must run the same "
                               "scheduler, steps and clip shape")
