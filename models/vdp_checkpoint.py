"""Reading video-diffusion-pytorch checkpoints: hyper-parameters from tensor shapes, then a strict load.

Accepted files:
- Trainer checkpoints `model-N.pt`: {'step', 'model', 'ema', 'scaler'}, both entries GaussianDiffusion state
  dicts (schedule buffers `betas`, `alphas_cumprod`, ... plus the network under `denoise_fn.`); `ema` is used
  unless `weights="model"`.
- bare state dicts (.pt/.pth/.ckpt/.bin read with `torch.load(weights_only=True)`, or .safetensors) of a
  GaussianDiffusion or of the Unet3D alone, also under wrapper prefixes (`ema_model.`, `online_model.`,
  `module.`, `_orig_mod.`, ...). Without schedule buffers the default cosine schedule of 1000 steps is used.
"""

import logging
import os
from dataclasses import dataclass

import torch

from .loader import ModelLoadError, check_safetensors
from .vae import PixelVAE
from .vdp import VDPConfig, VDPDenoiser, VDPUnet3D, cosine_betas, null_embedding_looks_untrained

log = logging.getLogger(__name__)

ANCHOR = "time_mlp.1.weight"  # every Unet3D has it, once
TORCH_EXTENSIONS = (".pt", ".pth", ".ckpt", ".bin")
EXTENSIONS = (".safetensors", *TORCH_EXTENSIONS)


@dataclass
class VDPModel:
    denoiser: VDPDenoiser
    vae: PixelVAE


def load_vdp(path: str, dtype: torch.dtype = torch.float32, weights: str = "ema", resnet_groups: int = 8) -> VDPModel:
    """Load a video-diffusion-pytorch checkpoint file as a pixel-space Denoiser and its pixel "VAE".

    `weights` picks the copy of a Trainer checkpoint ("ema" or "model"); `resnet_groups` is the GroupNorm group
    count of v0.6.x checkpoints (8 unless the model was built with another resnet_groups; shapes do not tell).
    """
    if weights not in ("ema", "model"):
        raise ModelLoadError(f"weights '{weights}' is unknown: choose ema or model")
    contents = read_checkpoint(path)
    state, twin = _pick_state(contents, weights, path)
    unet_state, schedule = split_state_dict(state, path)
    config = infer_config(unet_state, path, resnet_groups)
    network = VDPUnet3D(config)
    _fill_shared_rotary(unet_state, network)
    try:
        network.load_state_dict(unet_state, strict=True)
    except RuntimeError as error:
        raise ModelLoadError(
            f"{path}: the weights do not fit a video-diffusion-pytorch Unet3D inferred as {config}: {error}"
        ) from None
    network.eval().requires_grad_(False).to(dtype)

    betas = _betas(schedule, path)
    if config.cond_dim:
        twin_null = None
        if twin is not None:
            twin_unet, _ = split_state_dict(twin, path)
            if any(not torch.equal(value, twin_unet[key]) for key, value in unet_state.items() if key in twin_unet):
                twin_null = twin_unet.get("null_cond_emb")
        if null_embedding_looks_untrained(unet_state["null_cond_emb"], twin_null):
            log.warning(
                "%s: null_cond_emb looks untrained (video-diffusion-pytorch's trainer never drops the condition unless "
                "null_cond_prob is passed); classifier-free guidance against it may give poor results: try cfg 1", path
            )
    return VDPModel(VDPDenoiser(network, betas), PixelVAE(config.channels))


def read_checkpoint(path: str) -> dict:
    """The raw contents of a checkpoint file: a state dict or a Trainer checkpoint dict."""
    if not os.path.isfile(path):
        raise ModelLoadError(f"checkpoint '{path}' does not exist: put the file under models/longvideo or give its full path")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        check_safetensors(path)
        return load_file(path)
    if not path.endswith(TORCH_EXTENSIONS):
        raise ModelLoadError(f"{path}: unknown checkpoint type: expected one of {', '.join(EXTENSIONS)}")
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelLoadError(
            f"{path} could not be read with torch.load(weights_only=True) ({error}): it is damaged, or holds pickled "
            "Python objects, which are never loaded for safety; re-save its state_dict() (or as .safetensors)"
        ) from None
    if not isinstance(contents, dict):
        raise ModelLoadError(f"{path} holds a {type(contents).__name__}, not a state dict or a Trainer checkpoint")
    return contents


def _pick_state(contents: dict, weights: str, path: str) -> tuple[dict, dict | None]:
    """(the state dict to load, the other copy of a Trainer checkpoint or None)."""
    copies = {name: contents[name] for name in ("ema", "model") if isinstance(contents.get(name), dict)}
    if copies:
        if weights not in copies:
            raise ModelLoadError(f"{path} has no '{weights}' weights (it holds {', '.join(copies)}): choose that instead")
        other = next((state for name, state in copies.items() if name != weights), None)
        return copies[weights], other
    if isinstance(contents.get("state_dict"), dict):
        return contents["state_dict"], None
    return contents, None


def split_state_dict(state: dict, path: str = "checkpoint") -> tuple[dict, dict]:
    """(Unet3D state dict with its prefix removed, GaussianDiffusion schedule buffers) of any known layout."""
    prefixes = sorted({key[: -len(ANCHOR)] for key in state if key.endswith(ANCHOR) and isinstance(state[key], torch.Tensor)})
    if not prefixes:
        sample = ", ".join(list(state)[:5])
        raise ModelLoadError(
            f"{path} is not a video-diffusion-pytorch checkpoint: no '{ANCHOR}' tensor among its keys ({sample}, ...); "
            "expected a Trainer model-N.pt or a Unet3D/GaussianDiffusion state dict"
        )
    if len(prefixes) > 1:
        preferred = [p for p in prefixes if "ema_model." in p or p.startswith("ema.")]
        if len(preferred) != 1:
            raise ModelLoadError(f"{path} holds several networks ({', '.join(p or '(none)' for p in prefixes)}): save one of them alone")
        prefixes = preferred
    prefix = prefixes[0]
    unet = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    outer = prefix[: -len("denoise_fn.")] if prefix.endswith("denoise_fn.") else None
    schedule = {}
    if outer is not None:
        schedule = {key[len(outer) :]: value for key, value in state.items()
                    if key.startswith(outer) and not key.startswith(prefix) and "." not in key[len(outer) :]}
    return unet, schedule


def _shape(state: dict, key: str, path: str) -> tuple[int, ...]:
    if key not in state:
        raise ModelLoadError(f"{path}: '{key}' is missing, so this is not a video-diffusion-pytorch 0.6/0.7 Unet3D (or it is damaged)")
    return tuple(state[key].shape)


def infer_config(state: dict, path: str = "checkpoint", resnet_groups: int = 8) -> VDPConfig:
    """The Unet3D hyper-parameters that produce exactly these tensor shapes."""
    dim = _shape(state, ANCHOR, path)[1]
    init_dim, channels, _, _, kernel = _shape(state, "init_conv.weight", path)
    buckets, heads = _shape(state, "time_rel_pos_bias.relative_attention_bias.weight", path)
    qkv = _shape(state, "init_temporal_attn.fn.fn.fn.to_qkv.weight", path)[0]
    out_dim = _shape(state, "final_conv.1.weight", path)[0]
    levels = 0
    while f"downs.{levels}.0.block1.proj.weight" in state:
        levels += 1
    widths = [_shape(state, f"downs.{level}.0.block1.proj.weight", path)[0] for level in range(levels)]
    problems = []
    if levels == 0:
        problems.append("it has no down levels (downs.0.0.block1.proj.weight)")
    if init_dim != dim:
        problems.append(f"init_dim {init_dim} differs from dim {dim} (the original network cannot run that either)")
    if buckets != 32:
        problems.append(f"the relative position bias has {buckets} buckets, not 32")
    if qkv % (3 * heads):
        problems.append(f"temporal to_qkv has {qkv} rows, not a multiple of 3 x {heads} heads")
    if any(width % dim for width in widths):
        problems.append(f"level widths {widths} are not multiples of dim {dim}")
    if "downs.0.0.block1.norm.gamma" in state:
        norm = "rms"
    elif "downs.0.0.block1.norm.weight" in state:
        norm = "group"
    else:
        norm = None
        problems.append("its resnet blocks have neither RMSNorm gamma (v0.7) nor GroupNorm weight (v0.6)")
    if problems:
        raise ModelLoadError(f"{path}: not a video-diffusion-pytorch 0.6/0.7 Unet3D layout: {'; '.join(problems)}")
    attn_dim_head = qkv // (3 * heads)
    cond = state.get("null_cond_emb")
    config = VDPConfig(
        dim=dim,
        dim_mults=tuple(width // dim for width in widths),
        channels=channels,
        out_dim=out_dim,
        cond_dim=None if cond is None else cond.shape[-1],
        attn_heads=heads,
        attn_dim_head=attn_dim_head,
        init_dim=init_dim,
        init_kernel_size=kernel,
        use_sparse_linear_attn="downs.0.2.fn.fn.to_qkv.weight" in state,
        norm=norm,
        resnet_groups=resnet_groups,
    )
    rotary = state.get("init_temporal_attn.fn.fn.fn.rotary_emb.freqs")
    if rotary is not None and rotary.shape[0] * 2 != min(32, attn_dim_head):
        raise ModelLoadError(f"{path}: rotary frequencies {tuple(rotary.shape)} do not fit attn_dim_head {attn_dim_head}")
    if norm == "group" and any(width % resnet_groups for width in (*widths, dim)):
        raise ModelLoadError(f"{path}: GroupNorm widths {widths} are not multiples of resnet_groups {resnet_groups}")
    return config


def _fill_shared_rotary(state: dict, network: VDPUnet3D) -> None:
    """Give every temporal attention its rotary frequencies. They are one shared tensor, which state_dict() repeats
    under every path; safetensors' save_model keeps only one copy (and older rotary-embedding-torch kept none)."""
    paths = [key for key in network.state_dict() if key.endswith("rotary_emb.freqs")]
    present = next((state[key] for key in paths if key in state), network.init_temporal_attn.fn.fn.fn.rotary_emb.freqs)
    for key in paths:
        state.setdefault(key, present)


def _betas(schedule: dict, path: str) -> torch.Tensor:
    """The checkpoint's own betas when it has them (its training schedule), else the default cosine schedule."""
    betas = schedule.get("betas")
    if betas is None:
        return cosine_betas(1000)
    betas = betas.double().flatten()
    if len(betas) < 2 or not bool(((betas > 0) & (betas < 1)).all()):
        raise ModelLoadError(f"{path}: its 'betas' buffer ({len(betas)} values) is not a diffusion schedule")
    cosine = cosine_betas(len(betas))
    # The buffers were stored in float32; the float64 formula is the schedule they came from.
    return cosine if torch.allclose(betas, cosine, rtol=1e-5, atol=1e-7) else betas
