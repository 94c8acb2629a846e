"""Train the embedded default model: a tiny text-to-video diffusers folder that draws moving coloured shapes.

    python tools/train_tiny_model.py                               # ~55 min on 2 CPU cores: checkpoints/longvideo-shapes
    python tools/train_tiny_model.py --config micro --out /tmp/m   # a few seconds: the smoke test's configuration

Four parts, all in the layout `models/loader.py` reads (ModelScope / Zeroscope):
- tokenizer/: a CLIP BPE whose merges make each prompt word ("red", "circle", "moving", ...) one token; any other
  text falls back to one token per character.
- vae/: an AutoencoderKL, 64x64 RGB -> 8x8x4 (the 8x downscale the nodes assume), trained first on single frames
  (reconstruction + a tiny KL term); its scaling factor makes the latents of the training videos unit-variance.
- text_encoder/: a CLIPTextModel left at its seeded random initialisation and frozen, as real text-to-video models
  keep a pretrained CLIP frozen. Trained jointly, it learnt to drop the direction words (the UNet had no use for
  them, see below) and no later training could bring them back; frozen, every prompt word stays distinct.
- unet/: a UNet3DConditionModel trained on the VAE latents of 16-frame clips from tools/synthetic_shapes.py
  (v prediction, the prompt dropped 10% of the time so that classifier-free guidance works, time reversal with
  the direction word swapped as free augmentation). The UNet is saved as the exponential moving average of its
  weights.
- scheduler/: the linear DDPM schedule it was trained with (DDIM, DPM-Solver++ and the rest are built from it).

Why v prediction with this loss weighting: the object's path through a clip is still readable from the noisy
latents down to a signal-to-noise ratio (SNR) of about 1e-3, so the direction word only matters above that, at
the noisiest timesteps. An epsilon loss weighs clean-latent errors there by the SNR (~1e-3): a model trained so
ignored the direction word and drew motion in a random direction. The v loss below weighs clean-latent errors by
min(SNR + 1, cap): 1 at high noise, capped at low noise (min-SNR style) so that fine detail does not dominate.

That is not enough for the sign of the motion. At the noisiest timesteps, knowing which way the object moves lowers
the best possible clean-latent error by about 9% (measured on the training latents: per-frame means by direction vs
time-symmetric means), but only for a network that ties the word to which frame comes first (UNet3DConditionModel's
only clue to frame order is the zero padding of its temporal convolutions; adding positions to its temporal
attention did not help in a short test: README). The shipped model keeps the colour and ignores the direction word
(README, "The embedded model"; bench/direction_probe.py).

Everything is seeded: the same command gives the same model on the same machine. Progress is checkpointed in
--work every --checkpoint-every steps (safetensors and a JSON state file; the Adam moments included), so an
interrupted run continues where it stopped when started again with the same arguments.
"""

import argparse
import copy
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

try:
    from .synthetic_shapes import (BACKGROUND, COLOURS, DIRECTIONS, SHAPES, ShapeClip, draw_frame, find_shape,
                                   random_clip, random_turning_clip, render)
except ImportError:  # run as a script: tools/ is sys.path[0]
    from synthetic_shapes import (BACKGROUND, COLOURS, DIRECTIONS, SHAPES, ShapeClip, draw_frame, find_shape,
                                  random_clip, random_turning_clip, render)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "checkpoints", "longvideo-shapes")
REVERSED = {"left": "right", "right": "left", "up": "down", "down": "up"}
SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "v_prediction",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


@dataclass(frozen=True)
class TrainConfig:
    vae_channels: tuple[int, ...] = (16, 32, 64, 64)
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_heads: int = 4
    text_width: int = 64
    text_layers: int = 2
    frames: int = 16
    speed: tuple[float, float] = (1.5, 3.0)  # pixels per frame (capped so that the shape stays on screen)
    vae_steps: int = 1500         # at 400 steps red and yellow still decoded to the same orange
    vae_batch: int = 16
    vae_lr: float = 2e-3
    clips: int = 2048             # training clips, encoded once after the VAE is trained
    unet_steps: int = 3600
    unet_batch: int = 8
    unet_lr: float = 1e-3
    warmup: int = 50
    ema_decay: float = 0.995
    drop_prompt: float = 0.1
    loss_weight_cap: float = 5.0  # clean-latent errors weigh min(SNR + 1, cap)
    high_noise_share: float = 0.5  # share of training timesteps drawn from the noisier half, where layout and motion are decided
    known_frames_steps: int = 3000  # second stage: the UNet widened to take known frames (mask + known latents), fine-tuned
    known_frames_lr: float = 3e-4
    seam_weight: float = 3.0  # loss weight of an unknown frame next to a known one (where a seam shows), others 1
    # Slow clips for the known-frames stage: interpolating a generated clip, or infilling between keyframes made a few
    # frames apart, asks for slower motion than the training clips have (2 px a frame between keyframes 4 frames apart
    # is 0.5 px a frame); these clips are drawn only with the infill and interpolation patterns.
    slow_clips: int = 512
    slow_speed: tuple[float, float] = (0.25, 1.5)
    slow_share: float = 0.3
    # Turning clips for the known-frames stage: a continuation whose next prompt names another direction asks the new
    # frames to turn where the known ones end, which no straight clip shows (the model jumped at such seams). A share of
    # the batches are turning clips whose frames before the turn are known and whose prompt names the new direction.
    turning_clips: int = 512
    turns: tuple[int, int] = (1, 8)
    turning_share: float = 0.25
    # Shape detail: a square and a circle of the same size differ in a few latent values at the object's corners, a tiny
    # part of a loss spread over the whole 8x8 frame; the model drew squares round. The latent positions the object
    # covers weigh `object_weight` (others 1), and a `shape_noise_share` of the timesteps come from `shape_noise`,
    # where an SDEdit test showed the model rounding a square's corners.
    object_weight: float = 1.0
    shape_noise_share: float = 0.0
    shape_noise: tuple[int, int] = (100, 500)
    # A hinge that makes the wrong shape word pay: the model's error with another shape's word in the prompt must exceed
    # its error with the right word by `shape_margin` of it; `shape_contrast` weighs the hinge (0: off, no extra pass).
    shape_contrast: float = 0.0
    shape_margin: float = 0.05
    # Shape pairs: the same clip drawn as a square and as a circle (same colour, path, size), noised alike. A
    # `shape_pair_share` of the batches are such pairs (no known frames, no dropped prompt), and the difference of the two
    # predictions must match the difference of the two targets. Noise and position cancel in that difference, so what is
    # left to learn is what the shape word changes, which the plain loss buries under the noise's own error.
    shape_pair_clips: int = 0  # pairs encoded (0: off)
    shape_pair_share: float = 0.5
    shape_pair_weight: float = 1.0
    # Shape spread: the VAE fine-tuned so that a square's latents lie `shape_spread` times their distance to the same
    # frame drawn as a circle further out (the shipped VAE put them 13 apart, triangles 39), circles, triangles and
    # background staying where they were; the decoder learns both. Run before the clips are encoded (0: off).
    shape_spread: float = 0.0
    shape_spread_steps: int = 500
    shape_spread_lr: float = 5e-4
    shape_spread_circle_weight: float = 2.0  # decoder loss weight of the circle twins: they border the squares


CONFIGS = {
    "default": TrainConfig(),
    "micro": TrainConfig(vae_channels=(8, 8, 8, 8), unet_channels=(8, 16), unet_heads=2, text_width=16, text_layers=1, frames=4,
                         vae_steps=3, vae_batch=4, clips=4, unet_steps=3, unet_batch=2, warmup=1, known_frames_steps=3,
                         slow_clips=4, turning_clips=4, turns=(1, 2)),
}


# ---------------------------------------------------------------------------------------------------
# the networks


def prompt_words() -> list[str]:
    return sorted({"a", "moving", *SHAPES, *COLOURS, *DIRECTIONS})


def tokenizer_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary and merges of the CLIP BPE: every byte-level character (and character + "</w>") is a token, and
    merges learnt on the prompt words make each of those words a single token."""
    characters = [chr(c) for c in range(ord("!"), ord("~") + 1)] + [chr(c) for c in range(161, 161 + 94)]
    vocab = {c: i for i, c in enumerate(characters)}
    for c in characters:
        vocab[c + "</w>"] = len(vocab)
    words = [list(w[:-1]) + [w[-1] + "</w>"] for w in prompt_words()]
    merges = []
    while any(len(w) > 1 for w in words):
        counts = {}
        for w in words:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        pair = max(counts, key=lambda p: (counts[p], p))
        merges.append(pair)
        vocab.setdefault(pair[0] + pair[1], len(vocab))
        words = [_merge(w, pair) for w in words]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def build_tokenizer(max_length: int = 77):
    from transformers import CLIPTokenizer

    vocab, merges = tokenizer_vocabulary()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def _merge(word: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def build_models(config: TrainConfig, tokenizer):
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=1,
        block_out_channels=config.vae_channels, norm_num_groups=min(8, config.vae_channels[0]),
        down_block_types=("DownEncoderBlock2D",) * len(config.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(config.vae_channels),
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=config.text_width, intermediate_size=config.text_width * 4, num_attention_heads=4,
        num_hidden_layers=config.text_layers, vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    levels = len(config.unet_channels)
    unet = UNet3DConditionModel(
        in_channels=4, out_channels=4, sample_size=8, layers_per_block=1, block_out_channels=config.unet_channels,
        down_block_types=("CrossAttnDownBlock3D",) * (levels - 1) + ("DownBlock3D",),
        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (levels - 1),
        cross_attention_dim=config.text_width, attention_head_dim=config.unet_heads, norm_num_groups=min(8, config.unet_channels[0]),
    )
    return vae, text_encoder, unet


# ---------------------------------------------------------------------------------------------------
# checkpoints: safetensors for tensors (weights, EMA, Adam moments), JSON for the rest


class Checkpoint:
    def __init__(self, folder: str, config: TrainConfig, seed: int):
        self.folder = folder
        self.state_file = os.path.join(folder, "state.json")
        # Step counts are left out so that a finished run can be continued with more steps.
        self.identity = {"config": {k: v for k, v in asdict(config).items() if not k.endswith("_steps")}, "seed": seed}
        os.makedirs(folder, exist_ok=True)

    def state(self) -> dict:
        if not os.path.exists(self.state_file):
            return {}
        with open(self.state_file) as handle:
            state = json.load(handle)
        if state.get("identity") != json.loads(json.dumps(self.identity)):
            raise SystemExit(f"{self.folder} holds a run with other settings: give another --work folder or delete it")
        return state

    def save(self, name: str, tensors: dict, **state) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, os.path.join(self.folder, name + ".safetensors.tmp"))
        os.replace(os.path.join(self.folder, name + ".safetensors.tmp"), os.path.join(self.folder, name + ".safetensors"))
        merged = {**self.state(), **state, "identity": self.identity}
        with open(self.state_file + ".tmp", "w") as handle:
            json.dump(merged, handle, indent=1)
        os.replace(self.state_file + ".tmp", self.state_file)

    def load(self, name: str) -> dict:
        from safetensors.torch import load_file

        return load_file(os.path.join(self.folder, name + ".safetensors"))


def training_tensors(modules: dict, optimizer, ema: dict | None = None) -> dict:
    """Weights, EMA weights and Adam moments of named modules, flat for safetensors."""
    tensors = {}
    for prefix, module in modules.items():
        for name, parameter in module.named_parameters():
            key = f"{prefix}.{name}"
            tensors[key] = parameter
            moments = optimizer.state.get(parameter, {})
            for moment in ("exp_avg", "exp_avg_sq", "step"):
                if moment in moments:
                    tensors[f"adam.{moment}.{key}"] = torch.as_tensor(moments[moment], dtype=torch.float32)
    for key, value in (ema or {}).items():
        tensors[f"ema.{key}"] = value
    return tensors


def restore_training_tensors(tensors: dict, modules: dict, optimizer, ema: dict | None = None) -> None:
    with torch.no_grad():
        for prefix, module in modules.items():
            for name, parameter in module.named_parameters():
                key = f"{prefix}.{name}"
                parameter.copy_(tensors[key])
                if f"adam.exp_avg.{key}" in tensors:
                    optimizer.state[parameter] = {
                        "step": tensors[f"adam.step.{key}"].reshape(()),
                        "exp_avg": tensors[f"adam.exp_avg.{key}"].clone(),
                        "exp_avg_sq": tensors[f"adam.exp_avg_sq.{key}"].clone(),
                    }
        for key in ema or {}:
            ema[key].copy_(tensors[f"ema.{key}"])


# ---------------------------------------------------------------------------------------------------
# training


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def to_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in -1..1."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


def object_pixel_weights(pixels: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W]: 5 on the object's pixels, 1 on the grey background, so that the background cannot dominate."""
    background = torch.tensor(BACKGROUND, dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1
    return 1 + 4 * ((pixels - background).abs().amax(1, keepdim=True) > 0.05).float()


def reconstruction_error(decoded: torch.Tensor, pixels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    error = decoded - pixels
    return (weight * (error.square() + 0.1 * error.abs())).mean()


def train_vae(vae, config: TrainConfig, seed: int, checkpoint: Checkpoint, every: int, log) -> None:
    """Reconstruction of single frames, the object's pixels weighing more (object_pixel_weights)."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    start = checkpoint.state().get("vae_step", 0)
    if start:
        restore_training_tensors(checkpoint.load("vae"), {"vae": vae}, optimizer)
    vae.train()
    began = time.time()
    for step in range(start, config.vae_steps):
        rng = random.Random(seed * 1_000_003 + step)
        frames = np.stack([draw_frame(random_clip(rng, config.frames, speed=config.speed), rng.uniform(0, config.frames - 1))
                           for _ in range(config.vae_batch)])
        pixels = to_pixels(frames)
        torch.manual_seed(seed * 1_000_003 + step)
        posterior = vae.encode(pixels).latent_dist
        decoded = vae.decode(posterior.sample()).sample
        loss = reconstruction_error(decoded, pixels, object_pixel_weights(pixels)) + 1e-6 * posterior.kl().mean()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config.vae_steps, config.vae_lr, config.warmup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % 25 == 0 or step + 1 == config.vae_steps:
            log(f"vae step {step + 1}/{config.vae_steps} loss {loss.item():.4f} ({time.time() - began:.0f}s)")
        if (step + 1) % every == 0 or step + 1 == config.vae_steps:
            checkpoint.save("vae", training_tensors({"vae": vae}, optimizer), vae_step=step + 1)
    vae.eval()


def spread_squares(vae, config: TrainConfig, seed: int, checkpoint: Checkpoint, every: int, log) -> None:
    """Fine-tune the VAE so that the squares' latents move away from circles: a square frame's encoder target is
    E0(square) + spread * (E0(square) - E0(same frame as a circle)), every other frame's E0(frame), where E0 is the
    VAE before this stage; the decoder learns to decode the targets and its encoder's samples. A batch is 8 square
    frames, their 8 circle twins and 8 other frames (circles or triangles)."""
    before = copy.deepcopy(vae).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.shape_spread_lr, weight_decay=0.0)
    start = checkpoint.state().get("shape_spread_step", 0)
    if start:
        restore_training_tensors(checkpoint.load("shape_spread"), {"vae": vae}, optimizer)
    steps, pairs = config.shape_spread_steps, 8
    vae.train()
    began = time.time()
    for step in range(start, steps):
        rng = random.Random(seed * 1_000_003 + 9_000_001 + step)
        squares, circles, others = [], [], []
        for _ in range(pairs):
            clip, frame = random_clip(rng, config.frames, speed=config.speed), rng.uniform(0, config.frames - 1)
            squares.append(draw_frame(replace(clip, shape="square"), frame))
            circles.append(draw_frame(replace(clip, shape="circle"), frame))
        for _ in range(pairs):
            clip = random_clip(rng, config.frames, speed=config.speed)
            if clip.shape == "square":
                clip = replace(clip, shape=rng.choice(["circle", "triangle"]))
            others.append(draw_frame(clip, rng.uniform(0, config.frames - 1)))
        pixels = to_pixels(np.stack(squares + circles + others))
        with torch.no_grad():
            target = before.encode(pixels).latent_dist.mode()
            target[:pairs] += config.shape_spread * (target[:pairs] - target[pairs:2 * pairs])
        torch.manual_seed(seed * 1_000_003 + step)
        posterior = vae.encode(pixels).latent_dist
        encoder_loss = (posterior.mode() - target).square().mean()
        weight = object_pixel_weights(pixels)
        weight[pairs:2 * pairs] *= config.shape_spread_circle_weight
        decoder_loss = sum(reconstruction_error(vae.decode(latents).sample, pixels, weight)
                           for latents in (target, posterior.sample()))
        loss = 10 * encoder_loss + decoder_loss
        for group in optimizer.param_groups:  # cosine from the peak to 0, 20 steps of warm-up
            group["lr"] = config.shape_spread_lr * 0.5 * (1 + math.cos(math.pi * step / steps)) * min(1, (step + 1) / 20)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % 25 == 0 or step + 1 == steps:
            log(f"shape spread step {step + 1}/{steps} encoder {encoder_loss.item():.4f} decoder {decoder_loss.item():.4f} "
                f"({time.time() - began:.0f}s)")
        if (step + 1) % every == 0 or step + 1 == steps:
            checkpoint.save("shape_spread", training_tensors({"vae": vae}, optimizer), shape_spread_step=step + 1)
    vae.eval()


@torch.no_grad()
def encode_clips(vae, config: TrainConfig, seed: int, checkpoint: Checkpoint, log, kind: str = "clips"):
    """The latents [N, 4, T, 8, 8] (unscaled posterior means) and labels of the training clips ("clips"), the slow
    clips ("slow_clips"), the turning clips ("turning_clips") or the shape pairs ("shape_pairs": a square clip, then the
    same clip drawn as a circle), made once. A label is [shape, colour, direction] (for a turning clip the direction after
    the turn, then the turn's frame)."""
    if checkpoint.state().get(f"{kind}_encoded"):
        tensors = checkpoint.load(kind)
        return tensors["latents"], tensors["labels"]
    count, offset, draw = {
        "clips": (config.clips, 17, lambda rng: [random_clip(rng, config.frames, speed=config.speed)]),
        "slow_clips": (config.slow_clips, 29, lambda rng: [random_clip(rng, config.frames, speed=config.slow_speed)]),
        "turning_clips": (config.turning_clips, 41,
                          lambda rng: [random_turning_clip(rng, config.frames, config.turns, speed=config.speed)]),
        "shape_pairs": (2 * config.shape_pair_clips, 53,
                        lambda rng: shape_pair(random_clip(rng, config.frames, speed=config.speed))),
    }[kind]
    rng = random.Random(seed + offset)
    latents, labels = [], []
    began = time.time()
    for first in range(0, count, 4):
        clips = []
        while len(clips) < min(4, count - first):
            clips += draw(rng)
        pixels = to_pixels(np.concatenate([render(clip, config.frames) for clip in clips]))
        encoded = vae.encode(pixels).latent_dist.mode().unflatten(0, (len(clips), config.frames))
        latents.append(encoded.transpose(1, 2))
        labels += [[SHAPES.index(c.shape), list(COLOURS).index(c.colour), list(DIRECTIONS).index(c.final_direction)]
                   + ([c.turn[0]] if c.turn else []) for c in clips]
        if (first + len(clips)) % 256 == 0:
            log(f"encoded {first + len(clips)}/{count} {kind.replace('_', ' ')} ({time.time() - began:.0f}s)")
    latents, labels = torch.cat(latents).contiguous(), torch.tensor(labels)  # as loaded back: same std to the bit
    checkpoint.save(kind, {"latents": latents, "labels": labels}, **{f"{kind}_encoded": True})
    return latents, labels


def shape_pair(clip: ShapeClip) -> list[ShapeClip]:
    """The clip drawn as a square and as a circle: the two shapes the model confused (it drew squares round)."""
    return [replace(clip, shape="square"), replace(clip, shape="circle")]


def label_prompt(label, reverse: bool) -> str:
    shape, colour, direction = SHAPES[label[0]], list(COLOURS)[label[1]], list(DIRECTIONS)[label[2]]
    return f"a {colour} {shape} moving {REVERSED[direction] if reverse else direction}"


@dataclass(frozen=True)
class UNetStage:
    """One UNet training stage: its checkpoint name, length and peak learning rate, and whether the UNet takes known
    frames (input [noisy, mask, known latents]; loss on the unknown frames only)."""

    name: str
    steps: int
    lr: float
    known_frames: bool = False


def plain_stage(config: TrainConfig) -> UNetStage:
    return UNetStage("unet", config.unet_steps, config.unet_lr)


def known_frames_stage(config: TrainConfig) -> UNetStage:
    return UNetStage("known_frames_unet", config.known_frames_steps, config.known_frames_lr, known_frames=True)


def train_unet(unet, text_encoder, tokenizer, latents, labels, scaling: float, config: TrainConfig, seed: int,
               checkpoint: Checkpoint, every: int, log, stage: UNetStage, slow: tuple | None = None,
               turning: tuple | None = None, pairs: tuple | None = None) -> dict:
    """v prediction on scaled clip latents with the frozen text encoder; returns the EMA weights of the UNet.
    `slow` (latents, labels of slow clips) makes a share of the known-frames stage's clips slow, with infill patterns;
    `turning` (latents, labels of turning clips) makes a share of its batches turning clips known up to the turn;
    `pairs` (latents, labels of shape pairs) makes a share of either stage's batches shape pairs with the difference loss."""
    from diffusers import DDPMScheduler

    schedule = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    alphas = schedule.alphas_cumprod
    snr = alphas / (1 - alphas)
    # A v error is a clean-latent error times sqrt(SNR + 1): this weight makes the clean-latent weight min(SNR + 1, cap).
    loss_weight = torch.clamp(snr + 1, max=config.loss_weight_cap) / (snr + 1)
    text_encoder.requires_grad_(False).eval()
    contexts = PromptContexts(text_encoder, tokenizer)
    modules = {"unet": unet}
    parameters = list(unet.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=stage.lr, weight_decay=0.01)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    state_key = f"{stage.name}_step"
    start = checkpoint.state().get(state_key, 0)
    if start:
        restore_training_tensors(checkpoint.load(stage.name), modules, optimizer, ema)
    unet.train()
    began, running = time.time(), []
    for step in range(start, stage.steps):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        torch.manual_seed(seed * 1_000_003 + step)  # the UNet's temporal convolutions use dropout
        known, paired = None, False
        if turning is not None and float(torch.rand((), generator=generator)) < config.turning_share:
            clean, prompts, known = turning_batch(turning, scaling, config, generator)
        elif pairs is not None and float(torch.rand((), generator=generator)) < config.shape_pair_share:
            clean, prompts = pair_batch(pairs, scaling, config, generator)
            known, paired = torch.zeros(clean.shape[0], clean.shape[2]), True
        else:
            clean, prompts, slow_items = straight_batch(latents, labels, slow, scaling, config, generator, stage.known_frames)
        timesteps = torch.where(torch.rand(config.unet_batch, generator=generator) < config.high_noise_share,
                                torch.randint(len(alphas) // 2, len(alphas), (config.unet_batch,), generator=generator),
                                torch.randint(0, len(alphas), (config.unet_batch,), generator=generator))
        if config.shape_noise_share:
            timesteps = torch.where(torch.rand(config.unet_batch, generator=generator) < config.shape_noise_share,
                                    torch.randint(*config.shape_noise, (config.unet_batch,), generator=generator), timesteps)
        noise = torch.randn(clean.shape, generator=generator)
        if paired:  # both clips of a pair at the same timestep with the same noise
            timesteps, noise = timesteps[0::2].repeat_interleave(2), noise[0::2].repeat_interleave(2, dim=0)
        noisy = schedule.add_noise(clean, noise, timesteps)
        unknown = torch.ones(clean.shape[0], 1, clean.shape[2], 1, 1)
        if stage.known_frames:
            if known is None:
                known = torch.stack([known_frame_mask(clean.shape[2], generator, infill_only=bool(s)) for s in slow_items])
            known = known.view(config.unet_batch, 1, -1, 1, 1)
            noisy = known_frames_input(noisy, known.expand(-1, -1, -1, *clean.shape[3:]), clean)
            unknown = (1 - known) * seam_weights(known, config.seam_weight)
        if config.object_weight != 1:
            unknown = unknown * object_weights(clean, config.object_weight)
        target = schedule.get_velocity(clean, noise, timesteps)
        norm = (unknown.expand(-1, -1, -1, *clean.shape[3:]).sum(dim=(1, 2, 3, 4)) * clean.shape[1]).clamp(min=1)

        def weighted_error(prediction: torch.Tensor) -> torch.Tensor:
            return (unknown * (prediction - target).square()).sum(dim=(1, 2, 3, 4)) / norm

        prediction = unet(noisy, timesteps, contexts(prompts)).sample
        error = weighted_error(prediction)
        loss = (loss_weight[timesteps] * error).mean()
        if paired:
            difference = pair_difference_error(prediction, target, clean)
            loss = loss + config.shape_pair_weight * (loss_weight[timesteps[0::2]] * difference).mean()
        elif config.shape_contrast:
            wrong, named = other_shape_prompts(prompts, generator)
            wrong_error = weighted_error(unet(noisy, timesteps, contexts(wrong)).sample)
            hinge = torch.relu(error * (1 + config.shape_margin) - wrong_error) * named
            loss = loss + config.shape_contrast * (loss_weight[timesteps] * hinge).mean()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, stage.steps, stage.lr, config.warmup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for key, value in unet.state_dict().items():
                ema[key].lerp_(value, 1 - decay) if value.is_floating_point() else ema[key].copy_(value)
        running.append(loss.item())
        if (step + 1) % 25 == 0 or step + 1 == stage.steps:
            log(f"{stage.name} step {step + 1}/{stage.steps} loss {np.mean(running):.4f} ({time.time() - began:.0f}s)")
            running = []
        if (step + 1) % every == 0 or step + 1 == stage.steps:
            checkpoint.save(stage.name, training_tensors(modules, optimizer, ema), **{state_key: step + 1})
    unet.eval()
    return ema


# ---------------------------------------------------------------------------------------------------
# known frames: the second UNet stage, one model for every long-video mode


def widen_for_known_frames(unet):
    """The UNet with in_channels 2C + 1 ([noisy latents, mask, known latents], the Stable Diffusion inpainting order)
    whose new input channels start at zero, so that it computes exactly what the plain UNet computed until training
    moves them (as SD inpainting was made from SD). unet/config.json records the layout (models/hint_unet.py)."""
    from diffusers import UNet3DConditionModel

    channels = unet.config.in_channels
    widened = UNet3DConditionModel.from_config({**unet.config, "in_channels": 2 * channels + 1})
    state = unet.state_dict()
    weight = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([weight, weight.new_zeros(weight.shape[0], channels + 1, *weight.shape[2:])], 1)
    widened.load_state_dict(state)
    return mark_known_frames_layout(widened)


def mark_known_frames_layout(unet):
    """Record the [noisy, mask, known latents] layout in the UNet's config (diffusers drops the key when loading)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from pack_import import import_pack

    import_pack()
    from longvideo.models.hint_unet import KNOWN_FRAMES_INPUT_KEY, MASK_LAYOUT

    unet.register_to_config(**{KNOWN_FRAMES_INPUT_KEY: MASK_LAYOUT})
    return unet


def takes_known_frames(unet) -> bool:
    return unet.config.in_channels == 2 * unet.config.out_channels + 1


def known_frames_input(noisy: torch.Tensor, mask: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """[noisy, mask, clean latents where the mask is 1 and zero elsewhere]: the input models/hint_unet.py builds."""
    return torch.cat([noisy, mask, clean * mask], dim=1)


def known_frame_mask(frames: int, generator: torch.Generator, infill_only: bool = False) -> torch.Tensor:
    """[frames] with 1 at known frames, in the patterns the long-video modes use: none (text to video), the first k
    (continuation), both ends (hierarchical infill), every k-th (interpolation), or a few at random. `infill_only`
    draws only the infill and interpolation patterns (for slow clips)."""
    def draw(low: int, high: int) -> int:  # low..high inclusive
        return int(torch.randint(low, high + 1, (), generator=generator))

    mask, pattern = torch.zeros(frames), float(torch.rand((), generator=generator))
    if infill_only:
        pattern = 0.55 + 0.4 * pattern
    if pattern < 0.25:
        return mask
    if pattern < 0.55:
        mask[:draw(1, max(1, frames // 2))] = 1
    elif pattern < 0.75:
        mask[:draw(1, 2)] = 1
        mask[frames - draw(1, 2):] = 1
    elif pattern < 0.95:
        step = draw(2, 5)
        mask[draw(0, step - 1)::step] = 1
    else:
        mask = (torch.rand(frames, generator=generator) < 0.25).float()
    return mask


def straight_batch(latents, labels, slow: tuple | None, scaling: float, config: TrainConfig, generator: torch.Generator,
                   crop: bool):
    """(scaled latents, prompts, which items are slow clips) of a batch of straight clips: half reversed in time with the
    direction word swapped, a `slow_share` of them slow clips when `slow` is given, cut to 6..T frames when `crop`."""
    picks = torch.randint(0, len(latents), (config.unet_batch,), generator=generator)
    reverse = torch.rand(config.unet_batch, generator=generator) < 0.5
    drop = torch.rand(config.unet_batch, generator=generator) < config.drop_prompt
    clean, item_labels = latents[picks], labels[picks]
    slow_items = torch.zeros(config.unet_batch, dtype=torch.bool)
    if slow is not None:
        slow_items = torch.rand(config.unet_batch, generator=generator) < config.slow_share
        slow_picks = torch.randint(0, len(slow[0]), (config.unet_batch,), generator=generator)
        clean = torch.where(slow_items.view(-1, 1, 1, 1, 1), slow[0][slow_picks], clean)
        item_labels = torch.where(slow_items.view(-1, 1), slow[1][slow_picks], item_labels)
    clean = clean * scaling
    clean = torch.where(reverse.view(-1, 1, 1, 1, 1), clean.flip(2), clean)
    if crop:
        clean = crop_frames(clean, generator)
    prompts = ["" if d else label_prompt(label.tolist(), bool(r)) for label, r, d in zip(item_labels, reverse, drop)]
    return clean, prompts, slow_items


def turning_batch(turning: tuple, scaling: float, config: TrainConfig, generator: torch.Generator):
    """(scaled latents, prompts, known-frame masks [B, T]) of a batch of turning clips: the frames before the turn
    known (a continuation's previous chunk), the prompt naming the direction after it. Never reversed in time (the
    reversed clip would turn from the prompt's direction) nor cut (the turn must stay in the clip)."""
    latents, labels = turning
    picks = torch.randint(0, len(latents), (config.unet_batch,), generator=generator)
    drop = torch.rand(config.unet_batch, generator=generator) < config.drop_prompt
    prompts = ["" if d else label_prompt(label[:3].tolist(), False) for label, d in zip(labels[picks], drop)]
    known = (torch.arange(latents.shape[2]) < labels[picks, 3:4]).float()
    return latents[picks] * scaling, prompts, known


def pair_batch(pairs: tuple, scaling: float, config: TrainConfig, generator: torch.Generator):
    """(scaled latents, prompts) of a batch of shape pairs: items 2i and 2i + 1 are one clip drawn as a square and as a
    circle, reversed in time together (direction word swapped), never with the prompt dropped (the words must differ)."""
    latents, labels = pairs
    picks = (2 * torch.randint(0, len(latents) // 2, (config.unet_batch // 2,), generator=generator)[:, None]
             + torch.arange(2)).flatten()
    reverse = (torch.rand(config.unet_batch // 2, generator=generator) < 0.5).repeat_interleave(2)
    clean = latents[picks] * scaling
    clean = torch.where(reverse.view(-1, 1, 1, 1, 1), clean.flip(2), clean)
    return clean, [label_prompt(label.tolist(), bool(r)) for label, r in zip(labels[picks], reverse)]


def pair_difference_error(prediction: torch.Tensor, target: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per pair: the squared error of the difference between the pair's two predictions against the difference between
    their targets, averaged over the latent positions where the two clips differ (more than a tenth of the largest
    difference): elsewhere both differences are zero, and averaging over the whole frame would make the term vanish."""
    error = ((prediction[0::2] - prediction[1::2]) - (target[0::2] - target[1::2])).square().sum(dim=1, keepdim=True)
    apart = (clean[0::2] - clean[1::2]).norm(dim=1, keepdim=True)
    region = (apart > 0.1 * apart.flatten(1).amax(dim=1).view(-1, 1, 1, 1, 1)).float()
    return (error * region).sum(dim=(1, 2, 3, 4)) / (region.sum(dim=(1, 2, 3, 4)) * prediction.shape[1]).clamp(min=1)


def seam_weights(known: torch.Tensor, weight: float) -> torch.Tensor:
    """`weight` at frames next to a known frame, 1 elsewhere, for a known-frame mask [..., T, 1, 1]."""
    beside = torch.zeros_like(known)
    beside[..., 1:, :, :] += known[..., :-1, :, :]
    beside[..., :-1, :, :] += known[..., 1:, :, :]
    return 1 + (weight - 1) * (beside > 0).float()


def other_shape_prompts(prompts: list[str], generator: torch.Generator) -> tuple[list[str], torch.Tensor]:
    """The prompts with their shape word swapped for another shape's, and which of them name a shape (1) or are empty."""
    swapped, named = [], []
    for prompt in prompts:
        words = prompt.split()
        if len(words) == 5 and words[2] in SHAPES:
            others = [s for s in SHAPES if s != words[2]]
            words[2] = others[int(torch.randint(0, len(others), (), generator=generator))]
        swapped.append(" ".join(words))
        named.append(float(swapped[-1] != prompt))
    return swapped, torch.tensor(named)


def object_weights(clean: torch.Tensor, weight: float) -> torch.Tensor:
    """[B, 1, T, H, W]: `weight` at the latent positions the object covers, 1 elsewhere. The background is one plain
    colour and the object covers well under half of every frame, so a frame's median latent is the background's and
    positions far from it (more than a fifth of the frame's largest distance: the object and the latents its edges
    reach) are the object's."""
    background = clean.flatten(3).median(dim=3).values[..., None, None]
    distance = (clean - background).norm(dim=1, keepdim=True)
    far = distance > 0.2 * distance.flatten(3).amax(dim=3)[..., None, None]
    return 1 + (weight - 1) * far.float()


def crop_frames(clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Half the batches keep the whole clip; the others are cut to 6..T frames (an infill segment is short)."""
    frames = clean.shape[2]
    if frames <= 6 or float(torch.rand((), generator=generator)) < 0.5:
        return clean
    length = int(torch.randint(6, frames + 1, (), generator=generator))
    first = int(torch.randint(0, frames - length + 1, (), generator=generator))
    return clean[:, :, first:first + length]


class PromptContexts:
    """The frozen text encoder's output per prompt, computed once: training uses only a few dozen prompts."""

    def __init__(self, text_encoder, tokenizer):
        self.text_encoder, self.tokenizer, self.cache = text_encoder, tokenizer, {}

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        for prompt in set(prompts) - set(self.cache):
            tokens = self.tokenizer([prompt], padding="max_length", max_length=self.tokenizer.model_max_length,
                                    truncation=True, return_tensors="pt")
            self.cache[prompt] = self.text_encoder(tokens.input_ids)[0][0]
        return torch.stack([self.cache[p] for p in prompts])


@torch.no_grad()
def reconstruction_report(vae, config: TrainConfig, seed: int, count: int = 64) -> str:
    """How well the VAE alone keeps what bench/quality.py measures: colour (per palette colour) and centroid of
    reconstructed frames. A colour the VAE cannot reconstruct, the UNet cannot draw."""
    rng = random.Random(seed + 29)
    right, seen, offsets = dict.fromkeys(COLOURS, 0), dict.fromkeys(COLOURS, 0), []
    for _ in range(count):
        clip = random_clip(rng, config.frames, speed=config.speed)
        frame = render(clip, 1, first=rng.randrange(config.frames))
        decoded = vae.decode(vae.encode(to_pixels(frame)).latent_dist.mode()).sample
        image = ((decoded[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).round().byte().numpy()
        found, truth = find_shape(image), find_shape(frame[0])
        seen[clip.colour] += 1
        right[clip.colour] += found.colour == truth.colour
        if found.centre and truth.centre:
            offsets.append(math.dist(found.centre, truth.centre))
    per_colour = ", ".join(f"{c} {right[c]}/{seen[c]}" for c in COLOURS)
    return (f"VAE reconstructions: colour right {sum(right.values())}/{count} ({per_colour}), "
            f"centroid off by {np.mean(offsets):.2f} px on average")


def save_folder(out: str, vae, text_encoder, tokenizer, unet) -> None:
    from diffusers import DDIMScheduler, TextToVideoSDPipeline

    scheduler = DDIMScheduler.from_config(SCHEDULER_CONFIG)
    pipeline = TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    pipeline.save_pretrained(out, safe_serialization=True)
    # vocab.json + merges.txt beside tokenizer.json: what CLIPTokenizer of transformers 4.x reads.
    vocab, merges = tokenizer_vocabulary()
    with open(os.path.join(out, "tokenizer", "vocab.json"), "w", encoding="utf-8") as handle:
        json.dump(vocab, handle, ensure_ascii=False)
    with open(os.path.join(out, "tokenizer", "merges.txt"), "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def train(out: str, work: str, config: TrainConfig, seed: int = 0, every: int = 250, log=print,
          start_from: str | None = None) -> str:
    """Train every part (resuming from `work`) and write the diffusers folder `out`; returns its path.

    Two UNet stages: text to video, then the same UNet widened to take known frames (widen_for_known_frames) and
    fine-tuned on the known-frame patterns of every long-video mode. `start_from` (a folder this script wrote) takes the
    tokenizer, text encoder, VAE and UNet from it and runs the second stage only: on a plain UNet widened first, on a
    UNet that already takes known frames as a further fine-tune of it.
    """
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    checkpoint = Checkpoint(work, config, seed)
    began = time.time()
    if start_from:
        vae, text_encoder, unet = load_folder(start_from)
        log(f"{'known-frames UNet' if takes_known_frames(unet) else 'first stage'} from {start_from}")
    else:
        vae, text_encoder, unet = build_models(config, tokenizer)
        train_vae(vae, config, seed, checkpoint, every, log)
    if config.shape_spread:
        spread_squares(vae, config, seed, checkpoint, every, log)
    if config.shape_spread or not start_from:
        log(reconstruction_report(vae, config, seed))
    latents, labels = encode_clips(vae, config, seed, checkpoint, log)
    pairs = encode_clips(vae, config, seed, checkpoint, log, kind="shape_pairs") if config.shape_pair_clips else None
    if start_from:
        scaling = vae.config.scaling_factor
    else:
        scaling = 1.0 / float(latents.std())
        vae.register_to_config(scaling_factor=scaling)
        log(f"latent scaling factor {scaling:.4f}")
        unet.load_state_dict(train_unet(unet, text_encoder, tokenizer, latents, labels, scaling, config, seed, checkpoint,
                                        every, log, plain_stage(config), pairs=pairs))
    unet = mark_known_frames_layout(unet) if takes_known_frames(unet) else widen_for_known_frames(unet)
    if config.known_frames_steps:
        slow = encode_clips(vae, config, seed, checkpoint, log, kind="slow_clips") if config.slow_clips else None
        turning = encode_clips(vae, config, seed, checkpoint, log, kind="turning_clips") if config.turning_clips else None
        unet.load_state_dict(train_unet(unet, text_encoder, tokenizer, latents, labels, scaling, config, seed, checkpoint,
                                        every, log, known_frames_stage(config), slow, turning, pairs))
    save_folder(out, vae, text_encoder, tokenizer, unet)
    log(f"wrote {out} ({folder_megabytes(out):.1f} MB) in {time.time() - began:.0f}s")
    return os.path.abspath(out)


def load_folder(folder: str):
    """(VAE, text encoder, UNet) of a folder this script wrote."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextModel

    unet = UNet3DConditionModel.from_pretrained(os.path.join(folder, "unet"))
    return (AutoencoderKL.from_pretrained(os.path.join(folder, "vae")),
            CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder")), unet)


def folder_megabytes(folder: str) -> float:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder) for f in files) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="the model folder to write")
    parser.add_argument("--work", default=None, help="checkpoint folder (default: <out>.work); a run resumes from it")
    parser.add_argument("--config", default="default", choices=sorted(CONFIGS), help="network sizes and step counts")
    parser.add_argument("--vae-steps", type=int, help="override the configuration's VAE steps")
    parser.add_argument("--unet-steps", type=int, help="override the configuration's UNet steps")
    parser.add_argument("--known-frames-steps", type=int, help="override the configuration's known-frames (second stage) steps")
    parser.add_argument("--known-frames-lr", type=float, help="override the configuration's known-frames peak learning rate")
    parser.add_argument("--object-weight", type=float, help="override the loss weight of the latent positions the object covers")
    parser.add_argument("--shape-noise-share", type=float, help="override the share of timesteps drawn from the shape_noise range")
    parser.add_argument("--shape-contrast", type=float, help="override the weight of the wrong-shape-word hinge")
    parser.add_argument("--shape-pair-clips", type=int, help="override the number of square / circle pairs (0: no pair batches)")
    parser.add_argument("--shape-pair-share", type=float, help="override the share of batches that are shape pairs")
    parser.add_argument("--shape-pair-weight", type=float, help="override the weight of the shape pairs' difference loss")
    parser.add_argument("--shape-spread", type=float, help="override how far the VAE moves square latents from circles (0: off)")
    parser.add_argument("--shape-spread-steps", type=int, help="override the shape-spread VAE stage's steps")
    parser.add_argument("--start-from", help=("a folder written by this script: train the known-frames stage only, widening a plain UNet "
                                                  "or fine-tuning further one that takes known frames"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch (1 on a machine busy with other jobs: oversubscribed threads crawl)")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = CONFIGS[args.config]
    overridable = ("vae_steps", "unet_steps", "known_frames_steps", "known_frames_lr", "object_weight", "shape_noise_share",
                   "shape_contrast", "shape_pair_clips", "shape_pair_share", "shape_pair_weight", "shape_spread",
                   "shape_spread_steps")
    overrides = {name: getattr(args, name) for name in overridable if getattr(args, name) is not None}
    config = TrainConfig(**{**asdict(config), **overrides})
    train(args.out, args.work or args.out.rstrip("/\\") + ".work", config, args.seed, args.checkpoint_every,
          log=lambda message: print(message, flush=True), start_from=args.start_from)


if __name__ == "__main__":
    main()
