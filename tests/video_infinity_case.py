"""The tiny case that tests/data/video_infinity_reference.safetensors was made on with Video-Infinity's own plugins.

One UNet forward per (case, timestep) of a tiny UNet3DConditionModel over 3 ranks of 8 frames, padding 2, the
shipped phases (800, +10 local below / +10 global at or above). Its weights come from the parameter names alone
(a generator seeded by each name), so they do not depend on diffusers' initialisation order; the inputs are stored
beside the outputs.
"""

import math
import zlib

import torch

RANKS, FRAMES, PADDING = 3, 8, 2
TIMESTEPS = (900, 300)
CASES = {  # name: (top_k, token_num_scale); top_k 5 picks other global frames than a whole-video stride would
    "k6": (6, False),
    "k6_tns": (6, True),
    "k5_tns": (5, True),
}
CONTEXT_WIDTH = 32
PHASES = {"local_phase": {"t": 800, "local_biase": 10, "global_biase": 0}, "global_phase": {"t": 800, "local_biase": 0, "global_biase": 10}}


def exact_unet():
    """The tiny UNet3D (2 levels, 4 groups) with every parameter drawn from its name."""
    from diffusers import UNet3DConditionModel

    unet = UNet3DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=4, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=CONTEXT_WIDTH, attention_head_dim=4, norm_num_groups=4,
    )
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            noise = torch.randn(parameter.shape, generator=torch.Generator().manual_seed(zlib.crc32(name.encode())))
            if name.endswith("bias"):
                parameter.copy_(noise * 0.05)
            elif parameter.dim() == 1:  # norm weights
                parameter.copy_(1 + noise * 0.1)
            else:
                parameter.copy_(noise / math.sqrt(parameter[0].numel()))
    return unet.eval()


def inputs():
    """(latents [2, 4, RANKS * FRAMES, 4, 4], context [2, 7, CONTEXT_WIDTH]): two prompts, like a CFG batch."""
    latents = torch.randn(2, 4, RANKS * FRAMES, 4, 4, generator=torch.Generator().manual_seed(21))
    context = torch.randn(2, 7, CONTEXT_WIDTH, generator=torch.Generator().manual_seed(22))
    return latents, context


def plugin_configs(top_k: int, token_num_scale: bool) -> dict:
    """Video-Infinity's plugin_configs for a case (examples/config.json's keys)."""
    return {
        "attn": {"padding": PADDING, "top_k": top_k, "top_k_chunk_size": FRAMES, "attn_scale": 1.0,
                 "token_num_scale": token_num_scale, "dynamic_scale": True, **PHASES},
        "conv_3d": {"padding": 1},
        "conv_layer": {},
    }


def output_key(case: str, timestep: int, rank: int) -> str:
    return f"{case}/t{timestep}/rank{rank}"
