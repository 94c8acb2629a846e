"""InfiNet (kabachuha/InfiNet, NUWA-XL's multi-scale visual condition), attached to a stock diffusers UNet3D.

Per UNet block, a "diffusion over diffusion" modulation: four zero-initialised 3x3 convolutions read the condition
latent x_c (C channels) and a 1-channel keyframe mask x_m, each strided to the block's resolution (2**level), and
turn the block's hidden states h into

    h = conv_w(x_c) * h + conv_b(x_c) + h
    h = mask_conv_w(x_m) * h + mask_conv_b(x_m) + h

after the temporal convolution of every layer of every down and up block (before the spatial and temporal
attention), as in the InfiNet repo and NUWA-XL's Fig. 3: not in conv_in, the mid block or the output. Here the
modulation is applied by forward hooks on `down_blocks[i].temp_convs[j]` / `up_blocks[i].temp_convs[j]` that
exist only during a call, so the UNet itself (shared with every other node) is never changed, and gradient
checkpointing or attention backends cannot skip it.

Checkpoints: the InfiNet repo's key layout (`infinet.input_blocks_injections.N.*`,
`infinet.output_blocks_injections.N.*`; its constructor appends one entry per resnet layer but only entry i is
applied to block i, so entries beyond the block count are ignored) in a .bin/.safetensors file or a diffusers
unet folder, with the base UNet weights from the same file when it has them (the InfiNet repo fine-tunes the
attention too); and our own safetensors, which use the same keys plus metadata naming the condition content.

Condition content: "clean" (NUWA-XL): the clean parent latents at the known frames, zero elsewhere; "noisy" (what
the InfiNet repo's code feeds): the UNet's noisy input, every frame. The mask is 1 at the known frames. Without
known frames (the global pass) the modulation is skipped entirely, as the InfiNet repo does at diffusion depth 0.
"""

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .denoiser import Denoiser, KnownFrames, UNet3DDenoiser
from .loader import ModelLoadError, _find_weights, check_safetensors

CONDITIONS = ("clean", "noisy")
INFINET_PREFIX = "infinet."
LISTS = ("input_blocks_injections", "output_blocks_injections")
CONV_NAMES = ("conv_w", "conv_b", "mask_conv_w", "mask_conv_b")
FORMAT = "longvideo-infinet"


class BlockModulation(nn.Module):
    """One InfiNet entry (the InfiNet repo's DoDBlock): scale-and-shift of a block's hidden states."""

    def __init__(self, condition_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride

        def conv(channels):
            layer = nn.Conv2d(channels, out_channels, 3, stride=stride, padding=1)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
            return layer

        self.conv_w, self.conv_b = conv(condition_channels), conv(condition_channels)
        self.mask_conv_w, self.mask_conv_b = conv(1), conv(1)

    def forward(self, condition: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The four maps (w_c, b_c, w_m, b_m), each [B*F, out, ceil(H/stride), ceil(W/stride)]."""
        return self.conv_w(condition), self.conv_b(condition), self.mask_conv_w(mask), self.mask_conv_b(mask)

    @staticmethod
    def apply(hidden: torch.Tensor, maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        w_c, b_c, w_m, b_m = maps
        hidden = w_c * hidden + b_c + hidden
        return w_m * hidden + b_m + hidden


class InfiNet(nn.Module):
    """The modulations of every down block (input_blocks_injections) and up block (output_blocks_injections)."""

    def __init__(self, condition_channels: int, block_channels: list[int]):
        super().__init__()
        levels = len(block_channels)
        self.condition_channels = condition_channels
        self.input_blocks_injections = nn.ModuleList(
            BlockModulation(condition_channels, channels, 2**level) for level, channels in enumerate(block_channels)
        )
        self.output_blocks_injections = nn.ModuleList(
            BlockModulation(condition_channels, channels, 2 ** (levels - 1 - i))
            for i, channels in enumerate(reversed(block_channels))
        )

    @classmethod
    def for_unet_config(cls, config) -> "InfiNet":
        """A zero-initialised InfiNet that fits a UNet3DConditionModel config (dict or diffusers FrozenDict)."""
        return cls(config["in_channels"], list(config["block_out_channels"]))

    def modulations(self, condition: torch.Tensor, mask: torch.Tensor):
        """(per down block, per up block) modulation maps for a condition [B*F, C, H, W] and mask [B*F, 1, H, W]."""
        return ([entry(condition, mask) for entry in self.input_blocks_injections],
                [entry(condition, mask) for entry in self.output_blocks_injections])

    def check_fits(self, unet) -> None:
        """Raise ValueError when this InfiNet was made for a UNet with other blocks or channels."""
        expected = InfiNet.for_unet_config(unet.config)
        for name in LISTS:
            ours, theirs = getattr(self, name), getattr(expected, name)
            shapes = [tuple(e.conv_w.weight.shape) for e in ours]
            wanted = [tuple(e.conv_w.weight.shape) for e in theirs]
            if shapes != wanted:
                raise ValueError(
                    f"this InfiNet's {name} convs have shapes {shapes} but the model's blocks need {wanted}: "
                    "load an InfiNet trained for this model"
                )

    @contextmanager
    def attached(self, unet, condition: torch.Tensor, mask: torch.Tensor):
        """Within the block, every layer of every down and up block of `unet` is modulated by this condition."""
        down, up = self.modulations(condition, mask)
        handles = []
        for blocks, maps in ((unet.down_blocks, down), (unet.up_blocks, up)):
            for block, block_maps in zip(blocks, maps):
                hook = lambda module, inputs, output, m=block_maps: BlockModulation.apply(output, m)
                handles += [layer.register_forward_hook(hook) for layer in block.temp_convs]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


# ---------------------------------------------------------------------------------------------------
# checkpoints


@dataclass
class InfiNetWeights:
    """What LongVideoInfiNetLoader hands on (LV_INFINET): InfiNet tensors, optional base UNet weights, the condition.

    injections: {"input_blocks_injections.N.conv_w.weight": tensor, ...} (all entries the file had)
    base_weights: UNet3D weights from the same file, or None
    condition: "clean" or "noisy"
    """

    injections: dict
    base_weights: dict | None
    condition: str
    source: str = ""

    def build(self, unet) -> InfiNet:
        """The InfiNet for `unet`: entry i of each list for block i; extra entries are ignored, missing ones an error."""
        infinet = InfiNet.for_unet_config(unet.config)
        state = {}
        for name in LISTS:
            for index in range(len(getattr(infinet, name))):
                for conv in CONV_NAMES:
                    for part in ("weight", "bias"):
                        key = f"{name}.{index}.{conv}.{part}"
                        if key not in self.injections:
                            raise ModelLoadError(
                                f"InfiNet weights {self.source} lack '{INFINET_PREFIX}{key}': the model has "
                                f"{len(infinet.input_blocks_injections)} down and up blocks, so entries 0-"
                                f"{len(infinet.input_blocks_injections) - 1} of both lists are needed"
                            )
                        state[key] = self.injections[key]
        expected = infinet.state_dict()
        for key, tensor in state.items():
            if tuple(tensor.shape) != tuple(expected[key].shape):
                raise ModelLoadError(
                    f"InfiNet weights {self.source}: '{INFINET_PREFIX}{key}' has shape {tuple(tensor.shape)} but this "
                    f"model needs {tuple(expected[key].shape)}: load an InfiNet trained for this model"
                )
        infinet.load_state_dict(state)
        return infinet.eval().requires_grad_(False)


def split_state_dict(state: dict, source: str) -> tuple[dict, dict]:
    """(InfiNet entries without the "infinet." prefix, every other key)."""
    injections = {k[len(INFINET_PREFIX):]: v for k, v in state.items() if k.startswith(INFINET_PREFIX)}
    if not injections:
        raise ModelLoadError(
            f"{source} holds no '{INFINET_PREFIX}*' weights: it is not an InfiNet checkpoint (expected keys such as "
            f"{INFINET_PREFIX}input_blocks_injections.0.conv_w.weight)"
        )
    return injections, {k: v for k, v in state.items() if not k.startswith(INFINET_PREFIX)}


def load_infinet(path: str, condition: str = "auto") -> InfiNetWeights:
    """Read an InfiNet checkpoint: a .safetensors/.bin/.pt file, a diffusers unet folder, or a model folder with unet/.

    condition "auto" takes our own files' recorded condition, and "noisy" (what the InfiNet repo trains on) otherwise.
    """
    if condition not in ("auto", *CONDITIONS):
        raise ModelLoadError(f"InfiNet condition '{condition}' is unknown: choose auto, {', '.join(CONDITIONS)}")
    files = _checkpoint_files(path)
    state, metadata = {}, {}
    for file in files:
        if file.endswith(".safetensors"):
            from safetensors import safe_open

            check_safetensors(file)
            with safe_open(file, framework="pt") as handle:
                metadata.update(handle.metadata() or {})
                state.update({key: handle.get_tensor(key) for key in handle.keys()})
        else:
            try:
                loaded = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as error:
                raise ModelLoadError(f"could not read {file} as a weights-only torch checkpoint: {error}") from error
            state.update(loaded.get("state_dict", loaded) if isinstance(loaded, dict) else {})
    injections, base = split_state_dict(state, path)
    if condition == "auto":
        condition = metadata.get("condition", "noisy") if metadata.get("format") == FORMAT else "noisy"
    return InfiNetWeights(injections, base or None, condition, path)


def save_infinet(path: str, infinet: InfiNet, condition: str, base_weights: dict | None = None) -> None:
    """Write our own InfiNet safetensors: the InfiNet repo's keys (used entries only), optional base UNet weights."""
    from safetensors.torch import save_file

    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}, got '{condition}'")
    tensors = {INFINET_PREFIX + k: v.detach().cpu().contiguous() for k, v in infinet.state_dict().items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (base_weights or {}).items()})
    save_file(tensors, path, metadata={"format": FORMAT, "condition": condition})


def _checkpoint_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise ModelLoadError(f"InfiNet checkpoint '{path}' does not exist: give a .safetensors/.bin file or a unet folder")
    folder = os.path.join(path, "unet") if os.path.isdir(os.path.join(path, "unet")) else path
    files, _, _ = _find_weights(folder, ("diffusion_pytorch_model",))
    return files


# ---------------------------------------------------------------------------------------------------
# the denoiser


def unet_with_base_weights(unet, base_weights: dict):
    """A UNet3D like `unet` whose weights come from `base_weights` where given, else share `unet`'s CPU storage.

    Built empty (no second random initialisation) and filled by assignment; `unet` itself is not changed.
    """
    from accelerate import init_empty_weights

    own = unet.state_dict()
    unknown = sorted(set(base_weights) - set(own))
    if unknown:
        raise ModelLoadError(
            f"the InfiNet checkpoint has {len(unknown)} weights this UNet3D does not have (e.g. {unknown[:3]}): it was "
            "trained on another base model; load that model"
        )
    for key, tensor in base_weights.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise ModelLoadError(
                f"the InfiNet checkpoint's base weight '{key}' has shape {tuple(tensor.shape)} but the model's is "
                f"{tuple(own[key].shape)}: it was trained on another base model; load that model"
            )
    with init_empty_weights():
        fresh = type(unet).from_config(unet.config)
    merged = {k: base_weights[k].to(v.device, v.dtype) if k in base_weights else v for k, v in own.items()}
    fresh.load_state_dict(merged, assign=True)
    return fresh.eval().requires_grad_(False)


class InfiNetDenoiser(Denoiser):
    """A UNet3D with InfiNet: takes the known frames (frame conditioning 'learned') as the modulation's condition."""

    takes_known_frames = True

    def __init__(self, base: UNet3DDenoiser, infinet: InfiNet, condition: str = "clean"):
        if condition not in CONDITIONS:
            raise ValueError(f"InfiNet condition must be one of {', '.join(CONDITIONS)}, got '{condition}'")
        infinet.check_fits(base.unet)
        self.base = base
        self.infinet = infinet
        self.condition = condition
        self.latent_channels = base.latent_channels
        self.scheduler_config = base.scheduler_config
        self.context_width = base.context_width

    @classmethod
    def from_weights(cls, base: UNet3DDenoiser, weights: InfiNetWeights) -> "InfiNetDenoiser":
        infinet = weights.build(base.unet)
        if weights.base_weights:
            # The checkpoint's UNet, with the given model's scheduler and temporal attention scope.
            scope = base.temporal_scope
            base = UNet3DDenoiser(unet_with_base_weights(base.unet, weights.base_weights), base.scheduler_config)
            if scope is not None:
                base = base.with_temporal_attention(scope)
        made = cls(base, infinet, weights.condition)
        made.source = weights.source  # worker ranks load the same checkpoint (models/rank_models.py)
        return made

    def load(self) -> torch.device:
        device = self.base.load()
        self.infinet.to(device, self.base.unet.dtype)
        return device

    def condition_inputs(self, latents: torch.Tensor, known: KnownFrames) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_c, x_m) folded frame-minor, [B*F, C, H, W] and [B*F, 1, H, W], from the model input and the known frames."""
        batch, channels, frames, height, width = latents.shape
        index = torch.tensor(known.indices, device=latents.device)
        mask = torch.zeros(batch, 1, frames, height, width, device=latents.device, dtype=latents.dtype)
        mask[:, :, index] = 1
        if self.condition == "noisy":
            condition = latents
        else:
            condition = torch.zeros_like(latents)
            condition[:, :, index] = known.latents.to(latents.device, latents.dtype).expand(batch, -1, -1, -1, -1)

        def fold(x):
            return x.permute(0, 2, 1, 3, 4).reshape(batch * frames, x.shape[1], height, width)

        return fold(condition), fold(mask)

    @contextmanager
    def conditioned(self, latents: torch.Tensor, known: KnownFrames):
        """Within the block, calls of `self.base` on `latents` are modulated by the known frames.

        A call does just this around one forward pass; training (tools/train_infinet.py) keeps the block open through
        the backward pass too, because gradient checkpointing recomputes the blocks, modulation included, there.
        """
        dtype = self.base.unet.dtype
        condition, mask = self.condition_inputs(latents, known)
        with self.infinet.attached(self.base.unet, condition.to(dtype), mask.to(dtype)):
            yield

    def __call__(self, latents, timestep, context, known=None):
        if known is None:
            return self.base(latents, timestep, context)
        with self.conditioned(latents, known):
            return self.base(latents, timestep, context)
