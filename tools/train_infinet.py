"""Train InfiNet (NUWA-XL's keyframe conditioning) on top of a frozen diffusers UNet3D, from chopped videos.

    python tools/video_chop.py long.mp4 --L 16 --size 256x256 --caption "..." --out chopped
    python tools/train_infinet.py --model models/diffusers/zeroscope_v2_576w --data chopped --out runs/infinet \\
        --steps 20000 --batch-size 4 [--condition clean] [--unfreeze temp_convs,temp_attentions] [--gradient-checkpointing]
    python tools/train_infinet.py --out runs/infinet --resume --steps 40000      # go on (the run's settings are kept)

Every training sample is one infill run exactly as LongVideoHierarchicalSampler makes it with method 'learned': a
segment of L frames from level 2 or deeper of the chopped hierarchy (level 1, the keyframes, is sampled without known
frames and so without InfiNet), its first and last frames (the parents) known at positions 0 and L-1. The condition
latent and keyframe mask come from InfiNetDenoiser itself (condition 'clean': the parents' clean latents; 'noisy':
the noisy sample), so training and sampling cannot drift apart. The loss is the MSE against the target the model's
scheduler config names (epsilon, v_prediction or sample) at uniformly drawn training timesteps, on all L frames.

Trained: InfiNet (zero-initialised, or from --init), plus any base UNet parameters whose names contain one of the
--unfreeze patterns (fnmatch patterns if they have * ? or [). Everything else stays bit-identical.

Written into --out:
    infinet.safetensors            InfiNet + unfrozen base weights, for LongVideoInfiNetLoader (our own format)
    training_state.safetensors     trained parameters and optimizer tensors       } written at every save; the JSON
    training_state.json            step, settings, optimizer scalars, loss scaler } last, so a crash keeps the old pair

Runs on the compute device (CUDA if there is one) with autocast mixed precision there (--mixed-precision auto: bf16
where supported, else fp16 with a gradient scaler); the frozen weights are then stored in that dtype and the trained
ones in fp32. On the CPU it runs in fp32 (tiny models, tests). Data order, noise, timesteps and caption dropout are
drawn from the seed and the step number, so a resumed run continues exactly as an uninterrupted one would.
"""

import argparse
import fnmatch
import glob
import hashlib
import json
import os
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

import av
import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pack_import import import_pack  # noqa: E402

import_pack()
from longvideo.models.denoiser import KnownFrames, UNet3DDenoiser  # noqa: E402
from longvideo.models.infinet import CONDITIONS, InfiNet, InfiNetDenoiser, load_infinet, save_infinet  # noqa: E402
from longvideo.models.loader import ModelLoadError, load_text_to_video  # noqa: E402
from longvideo.utils.comfy import compute_device, offload_device  # noqa: E402

STATE_FORMAT = "longvideo-infinet-training"
STATE_TENSORS, STATE_JSON, INFINET_FILE = "training_state.safetensors", "training_state.json", "infinet.safetensors"
PRECISIONS = ("auto", "no", "fp16", "bf16")
LATENT_MODES = ("cache", "on-the-fly")
# Settings that may change when a run is resumed; every other setting must stay as the run began.
RESUMABLE_CHANGES = ("steps", "save_every", "log_every", "gradient_checkpointing", "latents", "vae_batch")


class TrainError(ValueError):
    """Bad data or settings; the message names the file or option and what to change."""


@dataclass
class TrainSettings:
    model: str = ""
    data: list = field(default_factory=list)
    out: str = ""
    condition: str = "clean"
    levels: list | None = None
    steps: int = 1000
    batch_size: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    cfg_dropout: float = 0.1
    unfreeze: list = field(default_factory=list)
    init: str | None = None
    seed: int = 0
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    latents: str = "cache"
    vae_batch: int = 8
    save_every: int = 500
    log_every: int = 10


# ---------------------------------------------------------------------------------------------------
# the dataset


@dataclass(frozen=True)
class Segment:
    clip: str
    caption: str
    level: int


def find_indexes(folder: str) -> list[str]:
    """index.json of a chopped video folder, or of every chopped video inside `folder`."""
    own = os.path.join(folder, "index.json")
    if os.path.isfile(own):
        return [own]
    found = sorted(glob.glob(os.path.join(folder, "*", "index.json")))
    if not found:
        raise TrainError(f"--data {folder}: no index.json there or in its subfolders: chop videos into it first with "
                         "tools/video_chop.py VIDEO --L N --out FOLDER")
    return found


def read_dataset(folders: list[str], levels: list[int] | None) -> tuple[list[Segment], int]:
    """The infill segments (level >= 2, or the given levels) of every chopped video, and their common L."""
    if not folders:
        raise TrainError("--data is missing: give one or more folders written by tools/video_chop.py")
    if levels is not None and any(level < 2 for level in levels):
        raise TrainError(f"--levels {levels}: level 1 holds the keyframes, which are sampled without known frames and "
                         "so never through InfiNet; choose levels 2 and deeper")
    segments, length, length_source = [], None, None
    for index_file in (i for folder in folders for i in find_indexes(folder)):
        try:
            with open(index_file, encoding="utf-8") as handle:
                index = json.load(handle)
            segment_length = int(index["L"])
            index_levels = index["levels"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise TrainError(f"{index_file} is not a video_chop index ({error}): chop the video again") from None
        if length is None:
            length, length_source = segment_length, index_file
        elif segment_length != length:
            raise TrainError(f"{index_file} has L={segment_length} but {length_source} has L={length}: InfiNet trains on one "
                             "segment length (its sampling runs); chop every video with the same --L")
        folder = os.path.dirname(index_file)
        for level in index_levels:
            if level["level"] < 2 or (levels is not None and level["level"] not in levels):
                continue
            for entry in level["segments"]:
                segment = Segment(os.path.join(folder, entry["clip"]), os.path.join(folder, entry["caption"]), level["level"])
                for path in (segment.clip, segment.caption):
                    if not os.path.isfile(path):
                        raise TrainError(f"{path} (listed in {index_file}) is missing: chop the video again")
                segments.append(segment)
    if not segments:
        wanted = "levels " + ", ".join(map(str, levels)) if levels else "level 2 or deeper"
        raise TrainError(f"--data {', '.join(folders)} holds no segments of {wanted}: a video chopped to depth 1 has only "
                         "keyframes; chop longer videos or with a smaller --L so they have infill levels")
    return segments, length


def read_clip(path: str, length: int) -> np.ndarray:
    """The segment's frames, uint8 [L, H, W, 3]."""
    with av.open(path) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if len(frames) != length:
        raise TrainError(f"{path} has {len(frames)} frames but its index says L={length}: chop the video again")
    return np.stack(frames)


def read_caption(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


# ---------------------------------------------------------------------------------------------------
# what is trained


def select_unfrozen(unet, patterns: list[str]) -> dict:
    """{name: parameter} of the base UNet parameters matching any pattern (substring, or fnmatch with * ? [)."""
    names = [name for name, _ in unet.named_parameters()]
    chosen = {}
    for pattern in patterns:
        glob_like = any(c in pattern for c in "*?[")
        matches = [n for n in names if (fnmatch.fnmatchcase(n, pattern) if glob_like else pattern in n)]
        if not matches:
            raise TrainError(f"--unfreeze '{pattern}' matches no UNet parameter; names look like {names[0]} or "
                             "down_blocks.0.temp_convs.0.conv1.1.weight (use parts such as temp_convs, temp_attentions, attn1)")
        chosen.update(dict.fromkeys(matches))
    parameters = dict(unet.named_parameters())
    return {name: parameters[name] for name in names if name in chosen}


@contextmanager
def checkpointed_blocks(unet, enabled: bool = True):
    """Gradient checkpointing for diffusers' UNet3D, which has none of its own (`_supports_gradient_checkpointing` is
    False): within the block every down, mid and up block keeps only its inputs and recomputes its insides in the
    backward pass (non-reentrant torch.utils.checkpoint, which also carries closure tensors such as InfiNet's
    modulation maps, and the autocast state). The InfiNet hooks must still be attached during the backward pass."""
    from torch.utils.checkpoint import checkpoint

    blocks = [b for b in (*unet.down_blocks, unet.mid_block, *unet.up_blocks) if b is not None] if enabled else []
    for block in blocks:
        block.forward = lambda *a, _forward=block.forward, **k: (
            checkpoint(_forward, *a, use_reentrant=False, **k) if torch.is_grad_enabled() else _forward(*a, **k))
    try:
        yield
    finally:
        for block in blocks:
            del block.forward  # the instance attribute; the class's forward shows through again


# ---------------------------------------------------------------------------------------------------
# seeded draws: a function of (seed, step) only, so resuming continues exactly


def derived_seed(seed: int, *parts) -> int:
    digest = hashlib.sha256(":".join(map(str, ("longvideo-train-infinet", seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def batch_indices(seed: int, step: int, batch_size: int, count: int) -> list[int]:
    """Segments of a step: a fresh seeded permutation of the dataset per epoch, read batch_size at a time."""
    indices, orders = [], {}
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, count)
        if epoch not in orders:
            orders[epoch] = torch.randperm(count, generator=torch.Generator().manual_seed(derived_seed(seed, "epoch", epoch)))
        indices.append(int(orders[epoch][offset]))
    return indices


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the model must predict for x_t = add_noise(latents, noise, t), by the scheduler config's prediction type."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise TrainError(f"the model's scheduler config has prediction_type '{kind}': training supports epsilon, v_prediction, sample")


@dataclass
class Batch:
    latents: torch.Tensor     # clean [B, C, L, h, w]
    context: torch.Tensor     # text [B, tokens, width]
    noise: torch.Tensor
    timesteps: torch.Tensor   # [B] long


# ---------------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """Everything one training run holds: model, data, InfiNet, optimizer. `run()` trains; tests drive it directly."""

    def __init__(self, settings: TrainSettings, log=print):
        self.settings, self.log = settings, log
        check_settings(settings)
        self.device = compute_device()
        settings.mixed_precision = resolve_precision(settings.mixed_precision, self.device)
        self.autocast_dtype = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}[settings.mixed_precision]

        self.segments, self.length = read_dataset(settings.data, settings.levels)
        self.captions = [read_caption(s.caption) for s in self.segments]
        empty = sum(not c for c in self.captions)
        levels = sorted({s.level for s in self.segments})
        log(f"data: {len(self.segments)} segments of L={self.length} (levels {', '.join(map(str, levels))}), "
            f"{empty} with an empty caption" + (" (they train as unconditional)" if empty else ""))

        model = load_text_to_video(settings.model, self.autocast_dtype or torch.float32)
        self.text_encoder, self.vae = model.text_encoder, model.vae
        base = model.denoiser
        if type(base) is not UNet3DDenoiser:
            raise TrainError(f"--model {settings.model}: InfiNet attaches to a plain text-to-video UNet3D, not a "
                             f"{type(base).__name__}")
        self.noise_scheduler = _noise_scheduler(base.scheduler_config)
        self.initial_base_weights = {}
        if settings.init:
            weights = load_infinet(settings.init, settings.condition)
            self.denoiser = InfiNetDenoiser.from_weights(base, weights)
            self.initial_base_weights = dict(weights.base_weights or {})
        else:
            self.denoiser = InfiNetDenoiser(base, InfiNet.for_unet_config(base.unet.config), settings.condition)
        self.unet = self.denoiser.base.unet.to(self.device)
        self.infinet = self.denoiser.infinet.to(self.device, torch.float32).train().requires_grad_(True)
        self.unfrozen = select_unfrozen(self.unet, settings.unfreeze)
        for parameter in self.unfrozen.values():
            parameter.data = parameter.data.float()
            parameter.requires_grad_(True)
        self.trainable = {f"infinet.{n}": p for n, p in self.infinet.named_parameters()}
        self.trainable.update({f"unet.{n}": p for n, p in self.unfrozen.items()})
        log(f"training {sum(p.numel() for p in self.trainable.values()):,} parameters: InfiNet"
            + (f" + {len(self.unfrozen)} unfrozen UNet tensors" if self.unfrozen else "")
            + f"; {settings.mixed_precision} mixed precision on {self.device}")

        self.optimizer = torch.optim.AdamW(list(self.trainable.values()), lr=settings.lr, weight_decay=settings.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=settings.mixed_precision == "fp16")
        self.latent_cache: dict[int, torch.Tensor] = {}
        self.text_cache: dict[str, torch.Tensor] = {}
        self.step = 0

    # --- data

    def clip_latents(self, index: int) -> torch.Tensor:
        """Clean latents [1, C, L, h, w] (float32, CPU) of segment `index`, from the cache or the VAE."""
        if index in self.latent_cache:
            return self.latent_cache[index]
        frames = read_clip(self.segments[index].clip, self.length)
        if frames.shape[1] % self.vae.downscale or frames.shape[2] % self.vae.downscale:
            raise TrainError(f"{self.segments[index].clip} is {frames.shape[2]}x{frames.shape[1]}: the VAE needs sides that are "
                             f"multiples of {self.vae.downscale}; chop with --size WxH")
        latents = self.vae.encode(torch.from_numpy(frames).float() / 255, self.settings.vae_batch)
        if self.settings.latents == "cache":
            self.latent_cache[index] = latents
        return latents

    def cache_latents(self) -> None:
        import psutil

        started = time.monotonic()
        for index in range(len(self.segments)):
            latents = self.clip_latents(index)
            if index == 0:
                needed, available = latents.numel() * 4 * len(self.segments), psutil.virtual_memory().available
                if needed > available // 2:
                    raise TrainError(f"caching the latents of {len(self.segments)} segments needs {needed / 2**30:.1f} GiB but "
                                     f"{available / 2**30:.1f} GiB of memory is free: use --latents on-the-fly")
            if (index + 1) % 100 == 0:
                self.log(f"encoded {index + 1}/{len(self.segments)} segments")
        shapes = {tuple(t.shape) for t in self.latent_cache.values()}
        if len(shapes) > 1:
            raise TrainError(f"the segments have different sizes (latents {sorted(shapes)}): chop every video with the same --size")
        size = sum(t.numel() * 4 for t in self.latent_cache.values())
        self.log(f"cached the latents of {len(self.segments)} segments ({size / 2**20:.1f} MiB) in {time.monotonic() - started:.1f} s")

    def text(self, caption: str) -> torch.Tensor:
        if caption not in self.text_cache:
            self.text_cache[caption] = self.text_encoder.encode([caption])[0]
        return self.text_cache[caption]

    def batch(self, indices: list[int], seed: int) -> Batch:
        """The segments `indices` with noise, timesteps and caption dropout drawn from `seed`."""
        generator = torch.Generator().manual_seed(seed)
        latents = [self.clip_latents(i) for i in indices]
        if len({tuple(t.shape) for t in latents}) > 1:
            raise TrainError(f"segments {[self.segments[i].clip for i in indices]} have different sizes: chop every video "
                             "with the same --size")
        latents = torch.cat(latents)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(indices),), generator=generator)
        noise = torch.randn(latents.shape, generator=generator)
        dropped = torch.rand(len(indices), generator=generator) < self.settings.cfg_dropout
        context = torch.cat([self.text("" if drop else self.captions[i]) for i, drop in zip(indices, dropped.tolist())])
        return Batch(latents, context, noise, timesteps)

    def step_batch(self, step: int) -> Batch:
        s = self.settings
        return self.batch(batch_indices(s.seed, step, s.batch_size, len(self.segments)), derived_seed(s.seed, "draws", step))

    # --- the loss

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def loss(self, batch: Batch, backward: bool = False) -> float:
        """The batch's loss; with `backward`, its (scaled) gradients are added to the trained parameters."""
        latents, noise = batch.latents.to(self.device), batch.noise.to(self.device)
        timesteps = batch.timesteps.to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        target = training_target(self.noise_scheduler, latents, noise, timesteps).float()
        # The parents, as the hierarchical sampler gives them at inference: frames 0 and L-1 of the run.
        known = KnownFrames([0, self.length - 1], latents[:, :, [0, self.length - 1]])
        grad = torch.enable_grad() if backward else torch.no_grad()
        with grad, checkpointed_blocks(self.unet, self.settings.gradient_checkpointing and backward), \
                self.autocast(), self.denoiser.conditioned(noisy, known):
            prediction = self.denoiser.base(noisy, timesteps, batch.context.to(self.device))
            loss = F.mse_loss(prediction.float(), target)
            if backward:
                with torch.autocast(self.device.type, enabled=False):
                    self.scaler.scale(loss).backward()
        return float(loss.detach())

    def train_step(self) -> float:
        """One optimizer step on the batch of `self.step`; returns its loss."""
        s = self.settings
        for group in self.optimizer.param_groups:
            group["lr"] = s.lr * min(1.0, (self.step + 1) / s.warmup_steps) if s.warmup_steps else s.lr
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.step_batch(self.step), backward=True)
        if s.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), s.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return loss

    def run(self, should_stop=lambda: False) -> list[float]:
        """Train from `self.step` to settings.steps, saving every save_every steps and at the end; returns the losses.

        `should_stop()` is asked between steps (the command line answers True after Ctrl+C): the run then saves and ends.
        """
        s = self.settings
        for caption in {"", *self.captions}:
            self.text(caption)
        self.text_encoder.text_model.to(offload_device())  # every caption is encoded; free the compute device
        if s.latents == "cache":
            self.cache_latents()
            self.vae.vae.to(offload_device())
        losses, started, window = [], time.monotonic(), []
        while self.step < s.steps and not should_stop():
            losses.append(self.train_step())
            window.append(losses[-1])
            if self.step % s.log_every == 0 or self.step == s.steps:
                rate = (time.monotonic() - started) / len(losses)
                self.log(f"step {self.step}/{s.steps}  loss {sum(window) / len(window):.5f}  "
                         f"lr {self.optimizer.param_groups[0]['lr']:.2e}  {rate:.2f} s/step")
                window = []
            if s.save_every and self.step % s.save_every == 0 and self.step < s.steps:
                self.save()
        self.save()
        if self.step < s.steps:
            self.log(f"stopped at step {self.step} and saved; go on with: --out {s.out} --resume")
        return losses

    # --- saving and resuming

    def save(self) -> None:
        """Write infinet.safetensors and the training state (tensors first, then the JSON that completes them)."""
        from safetensors.torch import save_file

        s = self.settings
        os.makedirs(s.out, exist_ok=True)
        base_weights = {**self.initial_base_weights, **self.unfrozen}
        _replace_atomically(os.path.join(s.out, INFINET_FILE),
                            lambda path: save_infinet(path, self.infinet, s.condition, base_weights or None))
        tensors = {f"param/{name}": p.detach().cpu().contiguous() for name, p in self.trainable.items()}
        optimizer = self.optimizer.state_dict()
        scalars = {}
        for number, state in optimizer["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"optimizer/{number}/{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(number), {})[key] = value
        _replace_atomically(os.path.join(s.out, STATE_TENSORS),
                            lambda path: save_file(tensors, path, metadata={"format": STATE_FORMAT, "step": str(self.step)}))
        state = {"format": STATE_FORMAT, "step": self.step, "settings": asdict(s), "trainable": list(self.trainable),
                 "optimizer_groups": optimizer["param_groups"], "optimizer_scalars": scalars,
                 "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}
        _replace_atomically(os.path.join(s.out, STATE_JSON),
                            lambda path: open(path, "w", encoding="utf-8").write(json.dumps(state, indent=1)))

    def restore(self) -> None:
        """Load the parameters, optimizer and loss scaler of the run in settings.out and go on from its step."""
        from safetensors.torch import load_file

        state = read_state(self.settings.out)
        tensors_path = os.path.join(self.settings.out, STATE_TENSORS)
        try:
            tensors = load_file(tensors_path)
            from safetensors import safe_open

            with safe_open(tensors_path, framework="pt") as handle:
                tensor_step = int((handle.metadata() or {}).get("step", -1))
        except Exception as error:
            raise TrainError(f"{tensors_path} cannot be read ({error}): the training state is damaged") from None
        if tensor_step != state["step"] or state["trainable"] != list(self.trainable):
            raise TrainError(f"{tensors_path} (step {tensor_step}) does not belong to {STATE_JSON} (step {state['step']}): "
                             "the run was stopped while saving; restore both files from a backup or start a new run")
        with torch.no_grad():
            for name, parameter in self.trainable.items():
                parameter.copy_(tensors[f"param/{name}"])
        optimizer_state = {}
        for key, tensor in tensors.items():
            if key.startswith("optimizer/"):
                _, number, name = key.split("/", 2)
                optimizer_state.setdefault(int(number), {})[name] = tensor
        for number, values in state["optimizer_scalars"].items():
            optimizer_state.setdefault(int(number), {}).update(values)
        groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in state["optimizer_groups"]]
        self.optimizer.load_state_dict({"state": optimizer_state, "param_groups": groups})
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.log(f"resumed {self.settings.out} at step {self.step}")


def read_state(out: str) -> dict:
    path = os.path.join(out, STATE_JSON)
    if not os.path.isfile(path):
        raise TrainError(f"--resume: {out} holds no {STATE_JSON}: it is not a training run folder (start without --resume)")
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError) as error:
        raise TrainError(f"{path} cannot be read ({error}): the training state is damaged") from None
    if state.get("format") != STATE_FORMAT:
        raise TrainError(f"{path} is not a train_infinet state file")
    return state


def resume_settings(out: str, given: dict) -> TrainSettings:
    """The run's stored settings, with the options given now that may change (steps, logging, ...); others must agree."""
    stored = read_state(out)["settings"]
    for key, value in given.items():
        if key in RESUMABLE_CHANGES or key == "out":
            stored[key] = value
        elif key == "mixed_precision" and value == "auto":
            continue
        elif value != stored.get(key):
            raise TrainError(f"--{key.replace('_', '-')} {value!r} differs from the run's {stored.get(key)!r}: a resumed "
                             f"run keeps its settings (only {', '.join(RESUMABLE_CHANGES)} may change); leave it out")
    return TrainSettings(**stored)


def check_settings(s: TrainSettings) -> None:
    problems = [
        (s.condition not in CONDITIONS, f"--condition must be one of {', '.join(CONDITIONS)}, not {s.condition!r}"),
        (s.mixed_precision not in PRECISIONS, f"--mixed-precision must be one of {', '.join(PRECISIONS)}"),
        (s.latents not in LATENT_MODES, f"--latents must be one of {', '.join(LATENT_MODES)}"),
        (s.steps < 1, "--steps must be at least 1"),
        (s.batch_size < 1, "--batch-size must be at least 1"),
        (s.vae_batch < 1, "--vae-batch must be at least 1"),
        (not 0 <= s.cfg_dropout <= 1, "--cfg-dropout is a probability, from 0 to 1"),
        (not s.lr > 0, "--lr must be positive"),
        (s.save_every < 0 or s.log_every < 1 or s.warmup_steps < 0, "--save-every, --warmup-steps >= 0 and --log-every >= 1"),
        (not s.model, "--model is missing: give a diffusers text-to-video folder"),
        (not s.out, "--out is missing: give a folder for the trained InfiNet and the training state"),
    ]
    for bad, message in problems:
        if bad:
            raise TrainError(message)


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type != "cuda":
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp16" and device.type != "cuda":
        raise TrainError(f"--mixed-precision fp16 needs a CUDA GPU (the compute device is {device}): use bf16 or no")
    return name


def _noise_scheduler(config: dict):
    from diffusers import DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
            "rescale_betas_zero_snr")
    return DDPMScheduler(**{k: config[k] for k in keys if config.get(k) is not None})


def _replace_atomically(path: str, write) -> None:
    temporary = path + ".partial"
    write(temporary)
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------------
# command line


def parse(argv=None) -> tuple[TrainSettings, bool]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model", help="diffusers text-to-video folder (the frozen UNet3D, its VAE and text encoder)")
    add("--data", nargs="+", help="folders written by tools/video_chop.py (a chopped video, or a folder of them)")
    add("--out", required=True, help="folder for infinet.safetensors and the training state")
    add("--resume", action="store_true", help="go on with the run in --out (its settings are kept)")
    add("--condition", choices=CONDITIONS,
        help="what InfiNet sees besides the mask: clean parents (NUWA-XL, default) or the noisy sample (InfiNet repo)")
    add("--levels", type=lambda t: [int(v) for v in t.split(",")],
        help="hierarchy levels to train on, e.g. 2,3 (default: all from 2)")
    add("--steps", type=int, help="total optimizer steps (default 1000)")
    add("--batch-size", type=int, help="segments per step (default 1)")
    add("--lr", type=float, help="AdamW learning rate (default 1e-5)")
    add("--weight-decay", type=float, help="AdamW weight decay (default 0)")
    add("--warmup-steps", type=int, help="linear learning-rate warm-up (default 0)")
    add("--max-grad-norm", type=float, help="gradient clipping norm, 0 for none (default 1)")
    add("--cfg-dropout", type=float,
        help="probability of training on the empty caption, for classifier-free guidance (default 0.1)")
    add("--unfreeze", type=lambda t: [p for p in t.split(",") if p],
        help="also train base UNet parameters whose names contain these, e.g. temp_convs,temp_attentions")
    add("--init", help="start from this InfiNet checkpoint (ours or the InfiNet repo's) instead of zeros")
    add("--seed", type=int, help="seed of data order, noise, timesteps and caption dropout (default 0)")
    add("--mixed-precision", choices=PRECISIONS, help="autocast dtype (default auto: bf16 or fp16 on CUDA, none on the CPU)")
    add("--gradient-checkpointing", action="store_true", default=None,
        help="recompute UNet blocks in the backward pass (less memory, slower)")
    add("--latents", choices=LATENT_MODES,
        help="cache: encode every segment once (default); on-the-fly: encode each step (less memory)")
    add("--vae-batch", type=int, help="frames per VAE encode call (default 8)")
    add("--save-every", type=int, help="steps between saves, 0 for only at the end (default 500)")
    add("--log-every", type=int, help="steps between progress lines (default 10)")
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    for key in ("model", "init", "out"):
        args[key] = args[key] and os.path.abspath(args[key])
    args["data"] = args["data"] and [os.path.abspath(folder) for folder in args["data"]]
    given = {k: v for k, v in args.items() if v is not None}
    if resume:
        return resume_settings(args["out"], given), True
    return TrainSettings(**given), False


def main(argv=None) -> Trainer:
    try:
        settings, resume = parse(argv)
        if not resume and os.path.exists(os.path.join(settings.out, STATE_JSON)):
            raise TrainError(f"{settings.out} already holds a training run: add --resume to go on with it, or choose another --out")
        trainer = Trainer(settings)
        if resume:
            trainer.restore()
        interrupts = []
        previous = signal.signal(signal.SIGINT, lambda *_: interrupts.append(1))  # finish the step, save, stop
        try:
            trainer.run(should_stop=lambda: bool(interrupts))
        finally:
            signal.signal(signal.SIGINT, previous)
    except (TrainError, ModelLoadError) as error:
        raise SystemExit(f"train_infinet: {error}") from None
    print(os.path.join(settings.out, INFINET_FILE))
    return trainer


if __name__ == "__main__":
    main()
