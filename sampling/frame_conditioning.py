"""Frame conditioning: "these frames are known", and how the denoising loop honours them.

Continuation (known = the last k frames of the previous chunk), hierarchical infill (known = the two
endpoints) and interpolation (known = every k-th frame) are all this one mechanism with different index
sets. The loop calls `model_step` instead of the model at every step and `finish` at the end.

- ReplaceConditioning (training-free, any model): before every model call the known frames are re-noised to
  the current level with the scheduler's own `add_noise` (with fixed noise drawn once per run); at the end
  they are exactly the given latents.
- GuidanceConditioning: reconstruction guidance (Ho et al. 2022, "Video Diffusion Models", section 3.1): the
  model's clean estimate of the known frames is compared with the known latents and the gradient of that
  error, through the model, steers every frame (weight `weight`; 1 is the natural setting). It costs a
  backward pass through the model at every step.
- ResampleConditioning (training-free, any model): replace plus RePaint's resampling (Lugmayr et al. 2022): in the
  noisier part of the run every step is taken, its result re-noised back to the level it started from, and taken again,
  `passes` extra times. Each pass lets the new frames settle against the known ones at that noise level; that helps
  as far as the model relates frames there (little for the embedded model at high noise: docs/coherence.md). It costs
  1 + passes x until model calls per step.
- BlendConditioning (training-free, any model): replace, but the new frames start from the known frames blended along
  time (each new frame the linear mix of the nearest known frames before and after it) noised to `strength`, and only
  the last `strength` of the steps run (SDEdit from the blend). Where the known frames are close in time (infill
  between keyframes, interpolation) the blend already holds the layout, so the model only refines it: a weakly coupling
  model cannot put the object elsewhere. With known frames on one side only (continuation) the blend is the nearest
  known frame held still, so it suits infill and interpolation, not continuation.
- LearnedConditioning: the model takes the known frames itself (ContinuitySeq's conditioning stream, InfiNet's
  keyframe masks, hint channels; see Denoiser.takes_known_frames); as with replace, the sample carries them re-noised
  to the current level every step, and at the end they are exactly the given latents. `frame_guidance` above 1 runs
  the unconditional text branch once more without the known frames and pushes the prediction away from it, as
  InstructPix2Pix guides towards its input image with a scale of its own: the new frames follow the known ones more
  closely (docs/coherence.md), for one more model pass per step (none when it equals the CFG).
"""

import math
from collections.abc import Callable

import torch

from ..models.denoiser import KnownFrames

Predict = Callable[..., torch.Tensor]
"""predict(latents, timestep, known=None, frame_guidance=1.0): the guided model prediction the loop steps with."""


class FrameConditioning:
    """How the loop honours known frames. The base class knows nothing and changes nothing.

    `method` names the method for executors other than the loop (ComfyUI's sampling translates 'replace' into its
    noise mask and 'guidance' into guidance on its clean estimate: models/comfy_model.py)."""

    method: str | None = None
    strength = 1.0  # below 1: the loop starts from `initial_latents` and runs the last `strength` of the steps

    def __init__(self, known: KnownFrames):
        self.known = known

    def initial_latents(self, shape) -> torch.Tensor | None:
        return None

    def extra_passes(self, step: int, steps: int) -> int:
        """How many times the loop re-noises step `step`'s result and takes the step again (RePaint's resampling)."""
        return 0

    def prepare(self, sampler, noise: torch.Tensor, device: torch.device) -> None:
        self.sampler = sampler
        self.index = torch.tensor(self.known.indices, dtype=torch.long, device=device)
        self.clean = self.known.latents.to(device, torch.float32).expand(noise.shape[0], -1, -1, -1, -1)
        self.noise = noise.to(device).index_select(2, self.index)

    def model_step(self, predict: Predict, latents: torch.Tensor, timestep: torch.Tensor):
        """(latents the scheduler steps from, the prediction)."""
        return latents, predict(latents, timestep)

    def finish(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


class ReplaceConditioning(FrameConditioning):
    method = "replace"

    def model_step(self, predict, latents, timestep):
        latents = self.with_known_noised(latents, timestep)
        return latents, predict(latents, timestep)

    def with_known_noised(self, latents, timestep):
        latents = latents.clone()
        latents[:, :, self.index] = self.sampler.add_noise(self.clean, self.noise, timestep.reshape(1))
        return latents

    def finish(self, latents):
        latents = latents.clone()
        latents[:, :, self.index] = self.clean
        return latents


class ResampleConditioning(ReplaceConditioning):
    method = "resample"

    def __init__(self, known: KnownFrames, passes: int = 2, until: float = 0.5):
        if passes < 0:
            raise ValueError(f"resampling passes must be 0 or more, got {passes}")
        if not 0.0 <= until <= 1.0:
            raise ValueError(f"the share of resampled steps must be in [0, 1], got {until}")
        super().__init__(known)
        self.passes = passes
        self.until = until

    def extra_passes(self, step, steps):
        # Never the last step: its result is the output, and there is no noise level to go back from.
        return self.passes if step < min(steps - 1, math.ceil(self.until * steps)) else 0


# The share of the steps blend runs: on the shipped embedded model 0.3 keeps hierarchical infill seams at 1.88x the
# interior step and 0.4 at 2.05x (80 videos each; replace: 13.8x); on earlier weights 0.5 gave 2.1x and 0.7 4.9x. Higher
# lets the model change more of the blend (fast motion).
BLEND_STRENGTH = 0.3


def check_blend_strength(strength: float) -> None:
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"blend_strength must be in (0, 1], got {strength}")


class BlendConditioning(ReplaceConditioning):
    method = "replace"  # other executors run it as replace from `initial_latents` at `strength`

    def __init__(self, known: KnownFrames, strength: float = BLEND_STRENGTH):
        check_blend_strength(strength)
        super().__init__(known)
        self.strength = strength

    def initial_latents(self, shape):
        return blend_along_time(self.known, shape)


def blend_along_time(known: KnownFrames, shape) -> torch.Tensor:
    """Latents of `shape` [B, C, T, H, W] (float32, CPU): the known frames where known, and between them the linear
    mix of the nearest known frame before and after (the nearest one alone beyond the first or last known frame)."""
    indices = list(known.indices)
    clean = known.latents.float().cpu().expand(shape[0], -1, -1, -1, -1)
    out = torch.empty(tuple(shape))
    for t in range(shape[2]):
        after = next((k for k, index in enumerate(indices) if index >= t), len(indices) - 1)
        before = after if indices[after] <= t else max(after - 1, 0)
        if indices[before] == indices[after]:
            out[:, :, t] = clean[:, :, after]
        else:
            weight = (t - indices[before]) / (indices[after] - indices[before])
            out[:, :, t] = torch.lerp(clean[:, :, before], clean[:, :, after], weight)
    return out


def check_frame_guidance(scale: float, denoiser=None) -> None:
    """Refuse a frame guidance scale below 0, or (given the denoiser) other than 1 on a model that needs known frames:
    its pass without them is what frame guidance compares with."""
    if not scale >= 0:
        raise ValueError(f"frame_guidance must be 0 or more (1 turns it off), got {scale}")
    if scale != 1.0 and denoiser is not None and denoiser.requires_known_frames:
        raise ValueError(f"frame_guidance {scale} needs a model that also samples without known frames, and this one "
                         "cannot (it only continues or interpolates given frames): set frame_guidance to 1")


def check_model_takes(denoiser, method: str, patterns, frame_guidance: float = 1.0) -> None:
    """Refuse, before anything is sampled, a method that `denoiser` cannot honour on the runs a strategy will sample:
    `patterns` lists (known indices, clip frames) of every kind of run. A model that brings its own executor says what
    it takes (ComfyDenoiser.check_frame_conditioning: its own learned conditioning, no RePaint passes); the pack's own
    models are checked by the nodes."""
    check = getattr(denoiser, "check_frame_conditioning", None)
    if check is not None and denoiser is not None:
        check(method, patterns, frame_guidance)


class LearnedConditioning(ReplaceConditioning):
    method = "learned"

    def __init__(self, known: KnownFrames, frame_guidance: float = 1.0):
        super().__init__(known)
        self.frame_guidance = frame_guidance

    def prepare(self, sampler, noise, device):
        super().prepare(sampler, noise, device)
        self.on_device = KnownFrames(self.known.indices, self.clean)

    def model_step(self, predict, latents, timestep):
        # The sample also carries the known frames, noised to the current level, as in training (where the whole clip
        # is noised): InfiNet's 'noisy' condition reads them from the sample, hint UNets see them beside the hint.
        latents = self.with_known_noised(latents, timestep)
        return latents, predict(latents, timestep, known=self.on_device, frame_guidance=self.frame_guidance)


class GuidanceConditioning(FrameConditioning):
    method = "guidance"

    def __init__(self, known: KnownFrames, weight: float = 1.0, prediction_type: str = "epsilon"):
        super().__init__(known)
        self.weight = weight
        self.prediction_type = prediction_type

    def prepare(self, sampler, noise, device):
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"reconstruction guidance in this loop needs an epsilon or v-prediction model, not {self.prediction_type}")
        super().prepare(sampler, noise, device)

    def model_step(self, predict, latents, timestep):
        alpha = self.sampler.alphas_cumprod.to(latents.device)[int(timestep)]
        with torch.enable_grad():
            noisy = latents.detach().requires_grad_(True)
            prediction = predict(noisy, timestep)
            # The model sees the latents in the variance-preserving parameterisation (scale_model_input).
            x = self.sampler.scale_model_input(noisy, timestep)
            if self.prediction_type == "epsilon":
                epsilon = prediction
            else:
                epsilon = alpha.sqrt() * prediction + (1 - alpha).sqrt() * x
            clean_estimate = (x - (1 - alpha).sqrt() * epsilon) / alpha.sqrt()
            error = (clean_estimate.index_select(2, self.index) - self.clean).pow(2).sum()
            (gradient,) = torch.autograd.grad(error, noisy)
        # Ho et al. step the clean estimate by -(w * alpha_t / 2) * gradient (alpha_t = sqrt(alpha_bar), which cancels
        # the 1 / alpha_t in the estimate's gradient, so the step stays bounded at high noise); with w = 1 the known
        # frames' own estimates move onto their latents to first order. Here that step is expressed on epsilon.
        epsilon = epsilon.detach() + self.weight * alpha / (2 * (1 - alpha).sqrt()) * gradient
        if self.prediction_type == "v_prediction":
            return latents, (epsilon - (1 - alpha).sqrt() * x.detach()) / alpha.sqrt()
        return latents, epsilon


METHODS = {"replace": ReplaceConditioning, "guidance": GuidanceConditioning, "learned": LearnedConditioning,
           "resample": ResampleConditioning, "blend": BlendConditioning}


def make_conditioning(method: str, known: KnownFrames, guidance_weight: float = 1.0, prediction_type: str = "epsilon",
                      blend_strength: float = BLEND_STRENGTH, frame_guidance: float = 1.0) -> FrameConditioning:
    """The frame conditioning a strategy's `method` setting names, for `known` frames."""
    if method not in METHODS:
        raise ValueError(f"method '{method}' is unknown: choose one of {', '.join(METHODS)}")
    if method == "guidance":
        return GuidanceConditioning(known, guidance_weight, prediction_type)
    if method == "blend":
        return BlendConditioning(known, blend_strength)
    if method == "learned":
        return LearnedConditioning(known, frame_guidance)
    return METHODS[method](known)
