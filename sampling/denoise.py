"""The one denoising loop. Every sampling strategy calls `denoise`; none copies it.

With the same model, scheduler, steps and seed it reproduces diffusers' TextToVideoSDPipeline: the
noise is drawn from one CPU generator seeded with `seed` (as ComfyUI does, so results do not depend on
the device), the initial noise is scaled by the scheduler's `init_noise_sigma`, classifier-free guidance
runs the unconditional and conditional passes as one batch, and the scheduler steps on frames folded
into the batch, which is what makes ancestral schedulers draw the same noise as the pipeline. For pixel-space
models (`Denoiser.sample_range`) the guided prediction's clean estimate is clipped to that range every step.
A Denoiser whose `noise_layout` is "video" (video-diffusion-pytorch) instead gets its step noise drawn in
[B, C, T, H, W] order, as its original sampler's randn_like does; the default "frames" folds frames into the batch.

`seed` may instead be a list with one seed per batch item: then every item draws its initial noise and its
ancestral step noise from its own CPU generator, so an item comes out the same whether it is sampled alone or
beside others (hierarchical segments rely on this). `[s]` for one item draws exactly what `s` draws.
"""

import copy
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from ..models.denoiser import Denoiser, KnownFrames
from .frame_conditioning import FrameConditioning
from .schedulers import make_scheduler

StepCallback = Callable[[int, int, torch.Tensor], None]


@dataclass(frozen=True)
class Prompt:
    """One prompt as the samplers take it: its token embeddings [1, tokens, width] and, for a model that samples itself,
    that model's own conditioning (`native`: ComfyUI's whole CONDITIONING, extras and all, as ComfyConditioning).

    The pack's loop reads only the tokens; a Denoiser with `samples_itself` (ComfyUI's MODEL) hands `native` to its
    sampler instead. A native conditioning has `for_frames(frames, total)`: itself for a run over `frames` of a
    `total`-frame video (its parts laid along the video's frames cut to them).
    """

    tokens: torch.Tensor
    native: object | None = None


@dataclass
class TextGuidance:
    """Text conditioning for one sampling run.

    positive / negative: token embeddings [1 or B, tokens, width]; negative None means no guidance.
    cfg: the classifier-free guidance scale; at 1 or below only the positive pass runs.
    native_positive / native_negative: the model's own conditioning (Prompt.native), one for every batch item or one
    per item; None when the prompts carry none (the pack's own models). `for_frames` cuts them to a run's frames.
    """

    positive: torch.Tensor
    negative: torch.Tensor | None = None
    cfg: float = 7.5
    native_positive: tuple | None = None
    native_negative: tuple | None = None

    @classmethod
    def from_prompts(cls, positive, negative, cfg: float) -> "TextGuidance":
        """Guidance from Prompts (or bare token tensors): `positive` one prompt, or a list of one per batch item (their
        token counts matched by repetition, which leaves cross-attention unchanged); `negative` one prompt or None."""
        items = list(positive) if isinstance(positive, (list, tuple)) else [positive]
        tokens = [_tokens(item) for item in items]
        stacked = tokens[0] if len(tokens) == 1 else stack_tokens(tokens)
        natives = tuple(getattr(item, "native", None) for item in items)
        native_negative = getattr(negative, "native", None)
        return cls(stacked, None if negative is None else _tokens(negative), cfg,
                   None if all(n is None for n in natives) else natives,
                   None if native_negative is None else (native_negative,))

    def for_frames(self, frames, total: int) -> "TextGuidance":
        """This guidance for a run over `frames` (indices into a video of `total` frames; one list for every batch item,
        or a list of lists, one per item): native conditioning laid along the video's frames is cut to them. Raises
        ValueError where that cannot be done soundly (the native conditioning says why)."""
        if self.native_positive is None and self.native_negative is None:
            return self
        per_item = len(frames) > 0 and not isinstance(frames[0], int)

        def cut(natives):
            if natives is None:
                return None
            if not per_item:
                return tuple(n.for_frames(list(frames), total) for n in natives)
            return tuple(natives[i if len(natives) > 1 else 0].for_frames(list(f), total) for i, f in enumerate(frames))

        return replace(self, native_positive=cut(self.native_positive), native_negative=cut(self.native_negative))

    @property
    def uses_cfg(self) -> bool:
        return self.negative is not None and self.cfg > 1.0

    def context(self, batch: int) -> torch.Tensor:
        """The context batch the model sees: [negative; positive] with CFG, else positive."""
        positive = _expand_batch(self.positive, batch, "positive")
        if not self.uses_cfg:
            return positive
        negative = _expand_batch(self.negative, batch, "negative")
        negative, positive = _match_token_counts(negative, positive)
        return torch.cat([negative, positive])

    def combine(self, prediction: torch.Tensor) -> torch.Tensor:
        if not self.uses_cfg:
            return prediction
        unconditional, conditional = prediction.chunk(2)
        return unconditional + self.cfg * (conditional - unconditional)


def count_steps(steps: int, strength: float) -> int:
    """How many model steps a run of `steps` at denoise `strength` takes."""
    return steps if strength >= 1.0 else min(int(steps * strength), steps)


def prepare_noise(shape, seed: int | Sequence[int]) -> tuple[torch.Tensor, torch.Generator | list[torch.Generator]]:
    """Standard normal noise of `shape` (float32, CPU) and the generator(s) that go on to feed ancestral steps.

    With one seed per batch item the second value lists one generator per folded (item, frame) row, each item's
    generator repeated over its frames: diffusers schedulers then draw every item's step noise from its own.
    """
    if isinstance(seed, Sequence):
        if len(seed) != shape[0]:
            raise ValueError(f"{len(seed)} seeds were given for a batch of {shape[0]}: give one seed per item")
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seed]
        noise = torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=torch.float32) for g in generators])
        return noise, [g for g in generators for _ in range(shape[2])]
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32), generator


@torch.no_grad()
def denoise(
    denoiser: Denoiser,
    guidance: TextGuidance,
    shape: tuple[int, ...],
    *,
    steps: int,
    seed: int | Sequence[int],
    scheduler: str = "ddim",
    init_latents: torch.Tensor | None = None,
    strength: float = 1.0,
    conditioning: FrameConditioning | None = None,
    callback: StepCallback | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample latents of `shape` [B, C, T, H, W]; returns them in float32 on the CPU.

    strength < 1 starts from `init_latents` noised to the matching level and runs only the last
    `int(steps * strength)` steps (video-to-video), as diffusers' VideoToVideoSDPipeline does.
    `conditioning` makes the clip contain known frames (sampling/frame_conditioning.py).
    `callback(step, total, latents)` runs after every step: progress, previews, cancellation.
    `noise` (standard normal, `shape`) replaces the noise drawn from `seed`, e.g. noise drawn frame by frame so that
    a frame starts alike in every window that samples it; ancestral steps still draw from `seed`.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"denoise strength must be in (0, 1], got {strength}")
    if strength < 1.0 and init_latents is None:
        raise ValueError("denoise strength below 1 needs input latents to start from")

    if conditioning is not None:
        conditioning.known.check(shape)
        if init_latents is None and conditioning.strength < 1.0:
            # At least one step, however few the steps: the user asked for a sampler run, not for the blend itself.
            init_latents, strength = conditioning.initial_latents(shape), max(conditioning.strength, 1.0 / max(steps, 1))
    if getattr(denoiser, "samples_itself", False):
        # A model that brings its own executor (ComfyUI's MODEL: its samplers, sigmas and noise mask) runs the clip.
        if noise is None:
            noise = prepare_noise(shape, seed)[0]
        elif tuple(noise.shape) != tuple(shape):
            raise ValueError(f"noise has shape {tuple(noise.shape)} but the sampled shape is {tuple(shape)}")
        return denoiser.sample(guidance, shape, noise=noise.float().cpu(), steps=steps, seed=seed, scheduler=scheduler,
                               init_latents=init_latents, strength=strength, conditioning=conditioning, callback=callback)
    device = denoiser.load()
    if noise is None:
        noise, generator = prepare_noise(shape, seed)
    elif tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)} but the sampled shape is {tuple(shape)}")
    else:
        # A zero-channel draw gives the seeded generators without consuming any of their numbers.
        noise, generator = noise.float().cpu(), prepare_noise(tuple(shape[:1]) + (0,) + tuple(shape[2:]), seed)[1]
    video_layout = getattr(denoiser, "noise_layout", "frames") == "video"
    if video_layout and isinstance(generator, list):
        generator = generator[:: shape[2]]  # one generator per item: the step noise is drawn per [C, T, H, W] item
    sampler = make_scheduler(scheduler, denoiser.scheduler_config)
    sampler.set_timesteps(steps, device=device)
    timesteps = sampler.timesteps
    if strength < 1.0:
        start = (steps - count_steps(steps, strength)) * sampler.order
        timesteps = timesteps[start:]
        if len(timesteps) == 0:
            raise ValueError(f"denoise strength {strength} with {steps} steps runs no step: raise steps or denoise")
        if hasattr(sampler, "set_begin_index"):
            sampler.set_begin_index(start)
        latents = sampler.add_noise(init_latents.to(device, torch.float32), noise.to(device), timesteps[:1])
    else:
        latents = noise.to(device) * sampler.init_noise_sigma

    context = guidance.context(shape[0]).to(device)
    # Made once, before the loop, so that no step waits on the device: the timesteps on the host (schedulers index their
    # tables with the timestep, which with a device tensor is a synchronising read) and the clipping's alpha-bars.
    host_timesteps = timesteps.cpu()
    clip_alphas = None if denoiser.sample_range is None else [alpha_bar(sampler, t).to(device) for t in host_timesteps]
    step_alpha = None

    def predict(x: torch.Tensor, timestep: torch.Tensor, known: KnownFrames | None = None,
                frame_guidance: float = 1.0) -> torch.Tensor:
        model_input = torch.cat([x] * 2) if guidance.uses_cfg else x
        model_input = sampler.scale_model_input(model_input, timestep)
        if known is None:
            prediction = guidance.combine(denoiser(model_input, timestep, context))
        elif frame_guidance != 1.0:
            prediction = guided_towards_frames(model_input, timestep, known, frame_guidance)
        else:
            if guidance.uses_cfg:
                # Both halves see the same known frames; only the text differs (as ContinuitySeq does).
                known = KnownFrames(known.indices, torch.cat([known.latents] * 2))
            prediction = guidance.combine(denoiser(model_input, timestep, context, known=known))
        if denoiser.sample_range is None:
            return prediction
        return clip_prediction(prediction, sampler.scale_model_input(x, timestep), step_alpha, denoiser.prediction_type,
                               denoiser.sample_range)

    def guided_towards_frames(model_input, timestep, known, scale):
        # The known frames get a guidance scale of their own, as InstructPix2Pix's input image does: with u the negative
        # text (the positive one without CFG), c the positive, F the known frames and 0 none,
        # e(u, 0) + scale * (e(u, F) - e(u, 0)) + cfg * (e(c, F) - e(u, F)).
        if not guidance.uses_cfg:
            without = denoiser(model_input, timestep, context)
            return without + scale * (denoiser(model_input, timestep, context, known=known) - without)
        x = model_input.chunk(2)[0]
        negative, positive = context.chunk(2)
        without = denoiser(x, timestep, negative)
        if scale == guidance.cfg:  # e(u, F) cancels: one pass fewer
            return without + scale * (denoiser(x, timestep, positive, known=known) - without)
        both_halves = KnownFrames(known.indices, torch.cat([known.latents] * 2))
        with_frames = denoiser(model_input, timestep, context, known=both_halves)
        return guidance.combine(with_frames) + (scale - 1.0) * (with_frames.chunk(2)[0] - without)

    if conditioning is not None:
        conditioning.prepare(sampler, noise, device)
    step_arguments = {"generator": generator} if "generator" in inspect.signature(sampler.step).parameters else {}
    def take_step(latents: torch.Tensor, index: int, timestep: torch.Tensor) -> torch.Tensor:
        if conditioning is None:
            prediction = predict(latents, timestep)
        else:
            latents, prediction = conditioning.model_step(predict, latents, timestep)
        return _scheduler_step(sampler, prediction, host_timesteps[index], latents, step_arguments, video_layout)

    resampling = torch.Generator("cpu").manual_seed(_first_seed(seed) + RESAMPLING_SEED_OFFSET)
    for index, timestep in enumerate(timesteps):
        step_alpha = None if clip_alphas is None else clip_alphas[index]
        for _ in range(0 if conditioning is None else conditioning.extra_passes(index, len(timesteps))):
            state = copy.deepcopy(sampler.__dict__)  # multistep solvers keep history: every pass starts from it
            stepped = take_step(latents, index, timestep)
            latents = renoise(sampler, stepped, host_timesteps[index + 1], host_timesteps[index], resampling)
            sampler.__dict__.clear()
            sampler.__dict__.update(state)
        latents = take_step(latents, index, timestep)
        if callback is not None:
            callback(index + 1, len(timesteps), latents)
    if conditioning is not None:
        latents = conditioning.finish(latents)
    return latents.cpu()


RESAMPLING_SEED_OFFSET = 7_919  # resampling noise comes from its own generator: the run's other draws stay as they are


def _first_seed(seed: int | Sequence[int]) -> int:
    return int(seed[0] if isinstance(seed, Sequence) else seed)


def renoise(sampler, latents: torch.Tensor, timestep: torch.Tensor, back_to: torch.Tensor,
            generator: torch.Generator) -> torch.Tensor:
    """`latents` at `timestep` diffused forward to the noisier `back_to` with fresh noise: q(x_back | x_t).

    Variance-preserving samples (DDIM, DDPM, DPM-Solver, UniPC) scale by sqrt(a_back / a_t) and add the missing
    variance; the Euler schedulers' samples are x0 + sigma * noise, which only add sigma_back^2 - sigma_t^2.
    """
    now, back = alpha_bar(sampler, timestep).double(), alpha_bar(sampler, back_to).double()
    noise = torch.randn(tuple(latents.shape), generator=generator, dtype=torch.float32).to(latents.device)
    if float(sampler.init_noise_sigma) > 1.0:
        added = ((1 - back) / back - (1 - now) / now).clamp(min=0).sqrt()
        return latents + added.float() * noise
    ratio = back / now
    return ratio.sqrt().float() * latents + (1 - ratio).clamp(min=0).sqrt().float() * noise


def alpha_bar(sampler, timestep: torch.Tensor) -> torch.Tensor:
    """The scheduler's alpha-bar at `timestep`; between training timesteps (Euler's spacing) from its sigma interpolated
    linearly, as the scheduler itself does."""
    alphas = sampler.alphas_cumprod.cpu().double()
    t = float(timestep)
    low = min(int(t), len(alphas) - 1)
    if t == low:
        return alphas[low].float().to(timestep.device)
    sigmas = ((1 - alphas) / alphas).sqrt()
    sigma = torch.lerp(sigmas[low], sigmas[low + 1], t - low)
    return (1 / (1 + sigma**2)).float().to(timestep.device)


def clean_estimate(prediction, x, alpha, prediction_type: str) -> torch.Tensor:
    """The clean sample that a prediction from `x` (the model input at alpha-bar `alpha`) implies."""
    a, s = alpha.sqrt(), (1 - alpha).sqrt()
    if prediction_type == "epsilon":
        return (x - s * prediction) / a
    if prediction_type == "v_prediction":
        return a * x - s * prediction
    if prediction_type == "sample":
        return prediction
    raise ValueError(f"cannot read the clean estimate off a {prediction_type} prediction")


def clip_prediction(prediction, x, alpha, prediction_type: str, limit: float) -> torch.Tensor:
    """The prediction whose clean estimate from `x` (the model input at alpha-bar `alpha`) is clipped to [-limit, limit].

    Every scheduler reads the clean estimate off the prediction the same way, so each then steps with the clipped one:
    with DDPM this is the original ancestral sampler of pixel-space models (clipped p_mean_variance).
    """
    if prediction_type == "sample":
        return prediction.clamp(-limit, limit)
    if prediction_type in ("epsilon", "v_prediction"):
        return prediction_from_clean(clean_estimate(prediction, x, alpha, prediction_type).clamp(-limit, limit), x, alpha,
                                     prediction_type)
    raise ValueError(f"cannot clip the clean estimate of a {prediction_type} prediction")


def prediction_from_clean(clean, x, alpha, prediction_type: str) -> torch.Tensor:
    """The prediction from `x` (the model input at alpha-bar `alpha`) whose clean estimate is `clean`: clean_estimate
    turned around."""
    a, s = alpha.sqrt(), (1 - alpha).sqrt()
    if prediction_type == "epsilon":
        return (x - a * clean) / s
    if prediction_type == "v_prediction":
        return (a * x - clean) / s
    if prediction_type == "sample":
        return clean
    raise ValueError(f"cannot make a {prediction_type} prediction from a clean estimate")


def _scheduler_step(sampler, prediction, timestep, latents, step_arguments, video_layout=False):
    """One scheduler step with the frames folded into the batch: [B, C, T, H, W] <-> [B*T, C, H, W].

    With `video_layout` the scheduler sees [B, C*T, H, W] instead, a view in [B, C, T, H, W] order, so that its step
    noise fills the video in that order (video-diffusion-pytorch's randn_like); the step itself is elementwise.
    """
    batch, channels, frames, height, width = latents.shape
    if video_layout:
        folded = (batch, channels * frames, height, width)
        stepped = sampler.step(prediction.reshape(folded), timestep, latents.reshape(folded), **step_arguments).prev_sample
        return stepped.reshape(latents.shape)

    def fold(x):
        return x.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)

    stepped = sampler.step(fold(prediction), timestep, fold(latents), **step_arguments).prev_sample
    return stepped.reshape(batch, frames, channels, height, width).permute(0, 2, 1, 3, 4)


def _tokens(prompt) -> torch.Tensor:
    return prompt.tokens if isinstance(prompt, Prompt) else prompt


def stack_tokens(lines: list[torch.Tensor]) -> torch.Tensor:
    """Per-item embeddings [1, tokens_i, width] -> [B, tokens, width] (token counts matched by repetition)."""
    return torch.cat(_repeat_to_common_length(lines))


def _repeat_to_common_length(lines: list[torch.Tensor]) -> list[torch.Tensor]:
    """Token sequences repeated to a common length; repeating all keys k times leaves attention unchanged."""
    common = math.lcm(*(line.shape[1] for line in lines))
    return [line if line.shape[1] == common else line.repeat(1, common // line.shape[1], 1) for line in lines]


def _expand_batch(embeddings: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if embeddings.dim() != 3:
        raise ValueError(f"{name} conditioning must be [batch, tokens, width], got shape {tuple(embeddings.shape)}")
    if embeddings.shape[0] == batch:
        return embeddings
    if embeddings.shape[0] != 1:
        raise ValueError(f"{name} conditioning has batch {embeddings.shape[0]} but the latent batch is {batch}: use 1 or {batch}")
    return embeddings.expand(batch, -1, -1)


def _match_token_counts(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _repeat_to_common_length([a, b])
    return a, b
