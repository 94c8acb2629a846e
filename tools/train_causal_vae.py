"""Train the pack's small causal video VAE (models/causal_vae.py, Wan 2.1's latent layout) on synthetic shapes clips.

    python tools/train_causal_vae.py --threads 2   # the shipped weights: checkpoints/longvideo-shapes-wan/vae.safetensors

Every step renders 4 fresh 17-frame 64x64 clips from tools/synthetic_shapes.py (`random_clips(seed, 17)`, one
coloured circle, square or triangle moving on grey) and trains encoder and decoder together on a 9-frame window of
each (from a random start; 4k + 1 frames, so its first frame is a causal first frame): 4 windows of 9 frames cost
what 2 whole clips do and show twice as many objects a step. The loss is the squared plus a tenth of the absolute
error, the object's pixels weighing 5 and the grey background 1 (train_tiny_model's weighting, so that the background
cannot dominate) and the pixels within 1 px of the object's outline 10 more (at 800 steps: held-out PSNR 31.5 dB
instead of 30.3, shape read back 47% of frames instead of 44%); Adam, a short warm-up and a cosine decay to a tenth of
the peak. The bottleneck is deterministic, but the decoder is trained on the latents with Gaussian noise added
(`--latent-noise`, 0.2) and a small penalty on their square (`--latent-penalty`, 1e-3) keeps their scale: a
transformer trained on these latents leaves small errors in them, which the decoder must take without visible damage
(the first weights, trained without: held-out PSNR 35.2 dB, 34.9 dB with noise of 0.2 standard
deviations on the latents; with: 36.3 and 36.2, and the shape read back in 90% of frames instead of 78%). The
per-channel mean and standard deviation of the latents of fresh training clips go into the file's config. Then the
decoder alone trains on whole 17-frame clips (`--decoder-steps`, 1,500, at `--decoder-lr` 5e-4 falling to a tenth;
the same noise on the latents), the encoder frozen: the 9-frame windows never show it a clip's fourth and fifth latent
frames, whose decoded frames read the object's shape worse (80% in the last four frames against 95% in the first). A
transformer learns the encoder's latents, so this phase changes nothing it was trained on. `--from FILE` runs this
phase alone from a VAE file: from the joint phase's own output it makes what the whole command makes.

At the end it prints the lineage (seed, steps, batch, time, threads, versions, a digest of the weights) and the
reconstruction figures on whole 17-frame clips drawn from another seed (`--eval-seed`): PSNR of the reconstructions
rounded to uint8 (also with noise on the latents), and the share of frames in which `find_shape` (the bench's reader,
bench/quality.py) reads the source frame's colour, and its shape, back from the reconstruction. The shipped weights
(this command with `--threads 2` on a shared 2-core machine: the joint phase 8.2 minutes, the decoder phase 8.4):
PSNR 38.7 dB over 64 held-out clips (worst clip 36.0; 38.5 with latent noise), colour read back in 100% of frames,
shape in 95.8%, centroid within 0.14 px (after the joint phase alone: 36.3 dB, 100%, 90%, 0.19 px).

Everything is seeded: the same command gives the same weights on the same machine and thread count.
"""

import argparse
import hashlib
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pack_import import import_pack  # noqa: E402

import_pack()
from longvideo.models.causal_vae import CausalVAEConfig, CausalVideoVAE  # noqa: E402
from longvideo.tools.synthetic_shapes import BACKGROUND, find_shape, random_clips, render  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "checkpoints", "longvideo-shapes-wan", "vae.safetensors")
FRAMES = 17
SIZE = 64
# Noise on the standardised latents, as a transformer's small errors leave them: how gracefully the decoder takes it.
NOISY_LATENT = 0.2


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1800
    batch: int = 4                # clips per step
    window: int = 9               # frames of each FRAMES-frame clip trained on (4k + 1, from a random start)
    lr: float = 1e-3
    warmup: int = 50
    object_weight: float = 5.0    # loss weight of the object's pixels; the background's is 1
    edge_weight: float = 10.0     # added to the weight of pixels within 1 px of the object's outline
    statistics_clips: int = 32    # fresh training clips whose latents give latents_mean / latents_std
    latent_noise: float = 0.2     # std of the Gaussian noise added to the latents before decoding (training only)
    latent_penalty: float = 1e-3  # weight of the mean squared latent in the loss (keeps the scale bounded under the noise)
    decoder_steps: int = 1500     # then the decoder alone on whole FRAMES-frame clips, the encoder frozen
    decoder_lr: float = 5e-4


def cosine_rate(step: int, steps: int, peak: float) -> float:
    """A cosine decay from `peak` to a tenth of it over `steps`."""
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))


def learning_rate(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    return cosine_rate(step - config.warmup, config.steps - config.warmup, config.lr)


def optimizer_step(optimizer, parameters, loss: torch.Tensor, lr: float) -> None:
    """One update at learning rate `lr`, gradients clipped to norm 1 (the training tools' shared step)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()


def to_pixels(videos: np.ndarray) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float [B, 3, T, H, W] in -1..1."""
    return torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float() / 127.5 - 1


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """float [B, 3, T, H, W] in -1..1 -> uint8 [B, T, H, W, 3], rounded as a saved video would be."""
    return ((pixels.permute(0, 2, 3, 4, 1) + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).numpy()


def render_batch(clips, count: int) -> np.ndarray:
    return np.stack([render(next(clips), FRAMES) for _ in range(count)])


def reconstruction_loss(decoded: torch.Tensor, pixels: torch.Tensor, object_weight: float,
                        edge_weight: float = 0.0) -> torch.Tensor:
    background = torch.tensor(BACKGROUND, dtype=torch.float32).view(1, 3, 1, 1, 1) / 127.5 - 1
    on_object = ((pixels - background).abs().amax(1, keepdim=True) > 0.05).float()
    weight = 1 + (object_weight - 1) * on_object
    if edge_weight:
        grown = F.max_pool3d(on_object, (1, 3, 3), stride=1, padding=(0, 1, 1))
        shrunk = -F.max_pool3d(-on_object, (1, 3, 3), stride=1, padding=(0, 1, 1))
        weight = weight + edge_weight * (grown - shrunk)
    error = decoded - pixels
    return (weight * (error.square() + 0.1 * error.abs())).mean()


def train(config: TrainConfig, seed: int = 0, vae_config: CausalVAEConfig | None = None, log=print) -> CausalVideoVAE:
    """Encoder and decoder together on windows of the clips, the latents' statistics, then the decoder alone."""
    vae = train_jointly(config, seed, vae_config, log)
    statistics_clips = random_clips(seed + 1_000_003, FRAMES, SIZE)
    vae.config = replace(vae.config, **latent_statistics(vae, statistics_clips, config.statistics_clips))
    return train_decoder(vae, config, seed, log)


def train_jointly(config: TrainConfig, seed: int, vae_config: CausalVAEConfig | None, log) -> CausalVideoVAE:
    torch.manual_seed(seed)
    vae = CausalVideoVAE(vae_config or CausalVAEConfig())
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr)
    clips, starts = random_clips(seed, FRAMES, SIZE), random.Random(seed)
    vae.latent_frames(config.window)
    vae.train()
    began, running = time.time(), []
    for step in range(config.steps):
        videos = render_batch(clips, config.batch)
        offsets = [starts.randrange(FRAMES - config.window + 1) for _ in videos]
        pixels = to_pixels(np.stack([video[first:first + config.window] for video, first in zip(videos, offsets)]))
        latents = vae.encode(pixels)
        noisy = latents + config.latent_noise * torch.randn_like(latents)
        loss = reconstruction_loss(vae.decode(noisy), pixels, config.object_weight, config.edge_weight)
        loss = loss + config.latent_penalty * latents.square().mean()
        optimizer_step(optimizer, vae.parameters(), loss, learning_rate(step, config))
        running.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == config.steps:
            log(f"step {step + 1}/{config.steps} loss {np.mean(running):.5f} ({time.time() - began:.0f}s)")
            running = []
    vae.eval()
    return vae


def train_decoder(vae: CausalVideoVAE, config: TrainConfig, seed: int, log) -> CausalVideoVAE:
    """The decoder alone on whole clips: the joint phase's 9-frame windows never put a clip's fourth and fifth latent
    frames before it, and its decoded last frames read the object's shape worse (the shape read back fell from 95% in
    the first frames to 80% in the last four; the transformer makes 5 latent frames). The encoder, and so the latents
    a transformer learns, stay as they are. Seeded apart from the joint phase: from the same joint weights (--from)
    it makes the same decoder."""
    torch.manual_seed(seed + 2)
    clips = random_clips(seed + 2, FRAMES, SIZE)
    vae.encoder.requires_grad_(False)
    parameters = list(vae.decoder.parameters())
    optimizer = torch.optim.Adam(parameters, lr=config.decoder_lr)
    vae.train()
    began, running = time.time(), []
    for step in range(config.decoder_steps):
        pixels = to_pixels(render_batch(clips, config.batch))
        with torch.no_grad():
            latents = vae.encode(pixels)
        decoded = vae.decode(latents + config.latent_noise * torch.randn_like(latents))
        loss = reconstruction_loss(decoded, pixels, config.object_weight, config.edge_weight)
        optimizer_step(optimizer, parameters, loss, cosine_rate(step, config.decoder_steps, config.decoder_lr))
        running.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == config.decoder_steps:
            log(f"decoder step {step + 1}/{config.decoder_steps} loss {np.mean(running):.5f} ({time.time() - began:.0f}s)")
            running = []
    vae.encoder.requires_grad_(True)
    vae.eval()
    return vae


@torch.no_grad()
def latent_statistics(vae: CausalVideoVAE, clips, count: int) -> dict:
    latents = torch.cat([vae.encode(to_pixels(render_batch(clips, 1))) for _ in range(count)])
    per_channel = latents.transpose(0, 1).reshape(vae.latent_channels, -1)
    return {"latents_mean": tuple(round(v, 6) for v in per_channel.mean(1).tolist()),
            "latents_std": tuple(round(v, 6) for v in per_channel.std(1).tolist())}


@torch.no_grad()
def reconstruction_figures(vae: CausalVideoVAE, seed: int, count: int) -> dict:
    """PSNR and find_shape read-back over `count` fresh clips of `seed`, each encoded and decoded whole.

    psnr: from the mean squared error over every pixel of every clip (uint8 reconstructions, peak 255); noisy_psnr: the
    same with NOISY_LATENT standard deviations (the latents' own, per channel) of Gaussian noise added before decoding;
    worst_clip_psnr: the lowest clip's; colour / shape: share of frames whose reconstruction reads the source frame's
    colour / shape (shape: among frames where the source reads one); centroid_px: mean centroid offset."""
    clips = random_clips(seed, FRAMES, SIZE)
    errors, noisy_errors, colour_right, shape_right, shape_frames, offsets, frames = [], [], 0, 0, 0, [], 0
    generator = torch.Generator().manual_seed(seed)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1) if vae.config.latents_std else 1.0
    for _ in range(count):
        source = render_batch(clips, 1)
        latents = vae.encode(to_pixels(source))
        decoded = to_uint8(vae.decode(latents))
        errors.append(float(np.mean((decoded.astype(np.float64) - source) ** 2)))
        noise = NOISY_LATENT * std * torch.randn(latents.shape, generator=generator)
        noisy_errors.append(float(np.mean((to_uint8(vae.decode(latents + noise)).astype(np.float64) - source) ** 2)))
        for truth_frame, decoded_frame in zip(source[0], decoded[0]):
            truth, found = find_shape(truth_frame), find_shape(decoded_frame)
            frames += 1
            colour_right += found.colour == truth.colour
            if truth.shape is not None:
                shape_frames += 1
                shape_right += found.shape == truth.shape
            if found.centre and truth.centre:
                offsets.append(math.dist(found.centre, truth.centre))
    return {
        "clips": count,
        "frames": frames,
        "psnr": 10 * math.log10(255 ** 2 / np.mean(errors)),
        "worst_clip_psnr": 10 * math.log10(255 ** 2 / max(errors)),
        "noisy_psnr": 10 * math.log10(255 ** 2 / np.mean(noisy_errors)),
        "colour": colour_right / frames,
        "shape": shape_right / max(shape_frames, 1),
        "centroid_px": float(np.mean(offsets)) if offsets else float("nan"),
    }


def weights_digest(vae: CausalVideoVAE) -> str:
    """sha256 of the tensors by name: the file's own bytes are no fingerprint (safetensors may write the metadata
    keys in another order each time)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def describe(figures: dict) -> str:
    return (f"held-out reconstructions ({figures['clips']} clips, {figures['frames']} frames): PSNR {figures['psnr']:.2f} dB "
            f"(worst clip {figures['worst_clip_psnr']:.2f}), colour read back {100 * figures['colour']:.1f}% of frames, "
            f"shape {100 * figures['shape']:.1f}%, centroid off by {figures['centroid_px']:.2f} px; with noise of "
            f"{NOISY_LATENT} standard deviations on the latents: PSNR {figures['noisy_psnr']:.2f} dB")


def log_line(message: str) -> None:
    print(message, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="the safetensors file to write")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch", type=int, default=TrainConfig.batch, help=f"{FRAMES}-frame clips per step")
    parser.add_argument("--window", type=int, default=TrainConfig.window, help="frames trained on per clip (4k + 1)")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--edge-weight", type=float, default=TrainConfig.edge_weight,
                        help="extra loss weight on the object's outline")
    parser.add_argument("--latent-noise", type=float, default=TrainConfig.latent_noise,
                        help="std of the noise on the latents the decoder is trained on")
    parser.add_argument("--latent-penalty", type=float, default=TrainConfig.latent_penalty,
                        help="weight of the mean squared latent in the loss")
    parser.add_argument("--decoder-steps", type=int, default=TrainConfig.decoder_steps,
                        help="steps of the decoder alone on whole clips after the joint training (0: none)")
    parser.add_argument("--decoder-lr", type=float, default=TrainConfig.decoder_lr)
    parser.add_argument("--from", dest="joint", metavar="VAE", help=(
        "skip the joint training: take this VAE file's weights and latent statistics and train only its decoder (from "
        "the joint phase's own output this makes what the whole command makes)"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-seed", type=int, default=1000, help="seed of the held-out clips (not the training seed)")
    parser.add_argument("--eval-clips", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = parser.parse_args()
    if args.eval_seed == args.seed:
        parser.error("--eval-seed must differ from --seed: the held-out clips would be training clips")
    torch.set_num_threads(args.threads)
    config = TrainConfig(steps=args.steps, batch=args.batch, window=args.window, lr=args.lr, edge_weight=args.edge_weight,
                         latent_noise=args.latent_noise, latent_penalty=args.latent_penalty,
                         decoder_steps=args.decoder_steps, decoder_lr=args.decoder_lr)
    began = time.time()
    if args.joint:
        vae = train_decoder(CausalVideoVAE.load(args.joint), config, args.seed, log_line)
    else:
        vae = train(config, args.seed, log=log_line)
    trained = time.time() - began
    vae.save(args.out)
    figures = reconstruction_figures(vae, args.eval_seed, args.eval_clips)
    parameters = sum(p.numel() for p in vae.parameters())
    joint = f"joint phase from {args.joint}; " if args.joint else ""
    log_line(f"lineage: {joint}seed {args.seed}, {config.steps} steps of {config.batch} clips x {config.window} of {FRAMES} "
             f"frames {SIZE}x{SIZE} (random_clips(seed, {FRAMES})), {asdict(config)}, {args.threads} thread(s), "
             f"torch {torch.__version__}, python {platform.python_version()}; "
             f"training {trained:.0f}s, total {time.time() - began:.0f}s")
    log_line(f"wrote {args.out}: {parameters:,} parameters, {os.path.getsize(args.out) / 1e6:.2f} MB, "
             f"weights sha256 {weights_digest(vae)[:16]}")
    log_line(describe(figures) + f" (eval seed {args.eval_seed})")


if __name__ == "__main__":
    main()
