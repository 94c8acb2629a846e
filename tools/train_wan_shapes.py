"""Train the pack's Wan-class shapes model: a small transformer of ComfyUI's own WanModel class on the shapes videos.

    COMFYUI_PATH=../shared/comfyui python tools/train_wan_shapes.py --threads 2     # the shipped weights

writes checkpoints/longvideo-shapes-wan/shapes_wan_i2v.safetensors (36 input channels: noisy latents, Wan's 4 mask and
16 image-latent channels, the layout of Wan 2.2 A14B I2V and Wan Fun InP) and shapes_wan_t2v.safetensors (16 input
channels: the same network without the image channels, which is exactly what it computes when they are zero, as
ComfyUI makes them for a text-to-video run). Both load with Load Diffusion Model (UNETLoader) as Wan 2.1 models.

The network: ComfyUI's comfy.ldm.wan.model.WanModel at dim 128 (one head of 128: ComfyUI's detection reads the head
count as dim / 128), 6 blocks, feed-forward 512, text width 4096 (ComfyUI builds every Wan 2.1 with it), patches
1x2x2; 2.3 M parameters, saved in float16.

The data: `--clips` 17-frame 64x64 clips of tools/synthetic_shapes.py (one shape moving on grey, seeded), encoded once
by the causal VAE (checkpoints/longvideo-shapes-wan/vae.safetensors) into 5 latent frames, standardised with the VAE's
own latent statistics (models/shapes_wan.py: what ComfyUI's Wan 2.1 latent format hands the model). Each clip is also
encoded as the image-channel models see known frames: the known pixel frames kept, every other frame grey (0.5), as
WanImageToVideo and WanFirstLastFrameToVideo build them, with Wan's mask (1 on the latent channels whose pixel frame
is known: `image_channel_mask`). The known-frame patterns are the hand-offs of the long-video samplers: none (text to
video: the 20 channels zero), the first 1, 5 or 9 pixel frames (continuation carrying 1, 2 or 3 latent frames), the
first and the last pixel frame (hierarchical infill between two parents).

The objective is ComfyUI's for Wan (CONST flow): x = (1 - s) x0 + s noise, the model called with timestep 1000 s
predicts noise - x0 (ComfyUI's denoised = x - s * output). s is drawn uniform half of the time and with Wan's time
shift (4) the other half; the prompt is dropped (the empty prompt's encoding) 10% of the time so that CFG works with an
empty negative prompt. AdamW, warm-up, cosine decay to a tenth; the weights saved are a moving average (0.999).
ComfyUI's WanModel trains as it is; only its attention function is set to ComfyUI's PyTorch one (the same
computation as the CPU default, sub-quadratic attention, with less overhead).

Everything is seeded: the same command gives the same weights on the same machine and thread count. It prints the
lineage at the end. The shipped weights: the default command with --threads 2, on the shipped VAE (docs/embedded-model.md
gives the time and the lineage).
"""

import argparse
import hashlib
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

OUT_FOLDER = os.path.join(ROOT, "checkpoints", "longvideo-shapes-wan")
VAE_FILE = os.path.join(OUT_FOLDER, "vae.safetensors")
TEXT_MODEL = os.path.join(ROOT, "checkpoints", "longvideo-shapes")
FRAMES = 17
SIZE = 64
LATENT_CHANNELS = 16
IMAGE_CHANNELS = 4 + LATENT_CHANNELS
# Known pixel frames of a 17-frame clip, per pattern, and how often each is drawn.
PATTERNS = {
    "text": ((), 0.3),
    "start 1": ((0,), 0.1),
    "start 5": (tuple(range(5)), 0.2),
    "start 9": (tuple(range(9)), 0.15),
    "first and last": ((0, FRAMES - 1), 0.25),
}
NETWORK = dict(dim=128, ffn_dim=512, num_heads=1, num_layers=6, freq_dim=256, text_dim=4096, out_dim=16,
               patch_size=(1, 2, 2), qk_norm=True, cross_attn_norm=True, eps=1e-6)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 12000
    batch: int = 16
    clips: int = 2048
    lr: float = 3e-4
    warmup: int = 200
    weight_decay: float = 0.01
    prompt_drop: float = 0.1
    shift: float = 4.0
    ema: float = 0.999


def image_channel_mask(known: tuple[int, ...], latent_frames: int) -> torch.Tensor:
    """Wan's 4 mask channels [4, latent_frames] for known pixel frames, as ComfyUI's WAN21.concat_cond makes them from
    WanImageToVideo's or WanFirstLastFrameToVideo's concat_mask: latent frame 0 covers pixel frame 0 in all four
    channels, latent frame i > 0 has channel j for pixel frame 4 (i - 1) + 1 + j; 1 where that frame is known."""
    mask = torch.zeros(4, latent_frames)
    for i in range(latent_frames):
        for j in range(4):
            mask[j, i] = float((0 if i == 0 else 4 * (i - 1) + 1 + j) in known)
    return mask


def build_network(in_dim: int, seed: int):
    """ComfyUI's WanModel, initialised as Wan's own code does (ComfyUI's layers skip initialisation)."""
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    torch.manual_seed(seed)
    network = WanModel(model_type="t2v", in_dim=in_dim, operations=comfy.ops.disable_weight_init, **NETWORK)
    dim = NETWORK["dim"]
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if name.endswith("modulation"):
                parameter.copy_(torch.randn_like(parameter) / dim ** 0.5)
            elif name.endswith("bias"):
                parameter.zero_()
            elif "norm" in name:
                parameter.fill_(1.0)
            elif name.startswith(("text_embedding", "time_embedding")):
                parameter.normal_(0, 0.02)
            elif name.startswith("head.head"):
                parameter.zero_()
            else:
                torch.nn.init.xavier_uniform_(parameter.view(parameter.shape[0], -1))
    return network


def render_clips(seed: int, count: int):
    from longvideo.tools.synthetic_shapes import random_clips, render

    stream = random_clips(seed, FRAMES, SIZE)
    clips = [next(stream) for _ in range(count)]
    return clips, np.stack([render(clip, FRAMES) for clip in clips])


@torch.no_grad()
def encode_dataset(vae, videos: np.ndarray, log) -> dict[str, torch.Tensor]:
    """Standardised latents per pattern: "clean" [N, 16, 5, 8, 8] and, per known-frame pattern, the image latents of the
    clip with only those frames kept (grey elsewhere)."""
    from longvideo.models.shapes_wan import ShapesWanVAE

    zero, one = torch.zeros(LATENT_CHANNELS), torch.ones(LATENT_CHANNELS)
    interface = ShapesWanVAE(vae, zero, one)  # the Wan statistics set to 0 / 1: encode gives the standardised latents
    began, out = time.time(), {}
    for name, (known, _) in [("clean", (tuple(range(FRAMES)), 0))] + [p for p in PATTERNS.items() if p[1][0]]:
        latents = []
        for video in videos:
            pixels = torch.full((FRAMES, SIZE, SIZE, 3), 0.5)
            pixels[list(known)] = torch.from_numpy(video[list(known)]).float() / 255
            latents.append(interface.encode(pixels)[0])
        out[name] = torch.stack(latents)
        log(f"encoded {len(videos)} clips as '{name}' ({time.time() - began:.0f}s)")
    return out


def prompt_table(clips) -> tuple[list[str], torch.Tensor]:
    """The distinct prompts (the empty one first) and their Wan-shaped encodings [P, tokens, 4096]."""
    from longvideo.models.loader import load_text_encoder
    from longvideo.models.shapes_wan import ShapesText

    prompts = [""] + sorted({clip.prompt for clip in clips})
    return prompts, ShapesText(load_text_encoder(TEXT_MODEL)).encode(prompts)


def train(config: TrainConfig, seed: int, vae_file: str = VAE_FILE, log=print):
    import comfy.ldm.wan.model
    from comfy.ldm.modules.attention import attention_pytorch
    from longvideo.models.causal_vae import CausalVideoVAE
    from longvideo.tools.train_causal_vae import learning_rate, optimizer_step

    comfy.ldm.wan.model.optimized_attention = attention_pytorch
    clips, videos = render_clips(seed, config.clips)
    prompts, texts = prompt_table(clips)
    prompt_index = torch.tensor([prompts.index(clip.prompt) for clip in clips])
    data = encode_dataset(CausalVideoVAE.load(vae_file), videos, log)
    latent_frames = data["clean"].shape[2]
    names = list(PATTERNS)
    weights = [PATTERNS[n][1] for n in names]
    masks = {n: image_channel_mask(PATTERNS[n][0], latent_frames) for n in names}

    network = build_network(LATENT_CHANNELS + IMAGE_CHANNELS, seed)
    network.train()
    average = {k: v.detach().clone() for k, v in network.state_dict().items()}
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    began, running = time.time(), []
    for step in range(config.steps):
        index = torch.tensor([rng.randrange(config.clips) for _ in range(config.batch)])
        x0 = data["clean"][index]
        image = torch.zeros(config.batch, IMAGE_CHANNELS, *x0.shape[2:])
        for row, clip in enumerate(index.tolist()):
            name = rng.choices(names, weights)[0]
            if PATTERNS[name][0]:
                image[row, :4] = masks[name].view(4, -1, 1, 1)
                image[row, 4:] = data[name][clip]
        text_rows = torch.where(torch.rand(config.batch, generator=generator) < config.prompt_drop, 0, prompt_index[index])
        uniform = torch.rand(config.batch, generator=generator)
        shifted = config.shift * uniform / (1 + (config.shift - 1) * uniform)
        sigma = torch.where(torch.rand(config.batch, generator=generator) < 0.5, uniform, shifted)
        noise = torch.randn(x0.shape, generator=generator)
        s = sigma.view(-1, 1, 1, 1, 1)
        x = (1 - s) * x0 + s * noise
        output = network(torch.cat([x, image], 1), sigma * 1000, texts[text_rows])
        loss = (output - (noise - x0)).square().mean()
        optimizer_step(optimizer, network.parameters(), loss, learning_rate(step, config))
        with torch.no_grad():
            decay = min(config.ema, (step + 1) / (step + 10))
            for name, value in network.state_dict().items():
                average[name].mul_(decay).add_(value.detach(), alpha=1 - decay)
        running.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == config.steps:
            log(f"step {step + 1}/{config.steps} loss {np.mean(running):.4f} ({time.time() - began:.0f}s)")
            running = []
    return average


def save(state: dict, path: str, in_dim: int) -> None:
    """The state in float16 (the image channels of the patch embedding cut for a text-to-video file)."""
    from safetensors.torch import save_file

    tensors = {}
    for name, tensor in state.items():
        if name == "patch_embedding.weight":
            tensor = tensor[:, :in_dim]
        tensors[name] = tensor.detach().to(torch.float16).contiguous()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(tensors, path + ".tmp", metadata={"format": "longvideo-shapes-wan", "in_dim": str(in_dim)})
    os.replace(path + ".tmp", path)


def digest(path: str) -> str:
    from safetensors.torch import load_file

    hasher = hashlib.sha256()
    for name, tensor in sorted(load_file(path).items()):
        hasher.update(name.encode())
        hasher.update(tensor.numpy().tobytes())
    return hasher.hexdigest()[:16]


def log_line(message: str) -> None:
    print(message, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=OUT_FOLDER, help="folder for shapes_wan_i2v.safetensors and shapes_wan_t2v.safetensors")
    parser.add_argument("--vae", default=VAE_FILE, help="the causal VAE whose latents it learns (tools/train_causal_vae.py)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = parser.parse_args()

    import comfy_env

    if not comfy_env.import_comfy_or_report():
        return 1
    from pack_import import import_pack

    import_pack()
    torch.set_num_threads(args.threads)
    config = TrainConfig(**{name: getattr(args, name) for name in asdict(defaults)})
    began = time.time()
    state = train(config, args.seed, args.vae, log=log_line)
    outputs = [(os.path.join(args.out, "shapes_wan_i2v.safetensors"), LATENT_CHANNELS + IMAGE_CHANNELS),
               (os.path.join(args.out, "shapes_wan_t2v.safetensors"), LATENT_CHANNELS)]
    for path, in_dim in outputs:
        save(state, path, in_dim)
    parameters = sum(v.numel() for k, v in state.items())
    log_line(f"lineage: seed {args.seed}, {asdict(config)}, network {NETWORK}, patterns "
             f"{ {n: w for n, (_, w) in PATTERNS.items()} }, {args.threads} thread(s), torch {torch.__version__}, "
             f"python {platform.python_version()}; total {time.time() - began:.0f}s")
    for path, in_dim in outputs:
        log_line(f"wrote {path}: {in_dim} input channels, {parameters:,} parameters, "
                 f"{os.path.getsize(path) / 1e6:.2f} MB, weights sha256 {digest(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
