"""ComfyUI's own video models (its MODEL: Wan 2.1 / 2.2, LTX-Video, HunyuanVideo, ...) behind the Denoiser interface.

The executor is ComfyUI's own sampling (`comfy.sample.sample_custom`: its CFGGuider, its k-diffusion samplers, its
sigma schedules, its noise mask). The long-video strategies (continuation, hierarchical, interpolation) are unchanged:
they call `sampling.denoise.denoise`, which hands a run to `ComfyDenoiser.sample` because this Denoiser samples
itself. So every strategy is defined once, and a run of a strategy on a ComfyUI model is exactly ComfyUI sampling the
same noise with a noise mask: model_sampling (EPS, V_PREDICTION, CONST flow with the model's shift), latent format
scaling, conditioning handling, model patches, LoRAs, hooks and wrappers the user applied, and ComfyUI's model
management placing the model (docs/comfyui_models.md gives the reasons for this choice).

Conditioning: the prompts carry ComfyUI's whole CONDITIONING (ComfyConditioning: tokens and extras, e.g. T5's
attention_mask for LTX-Video, CLIP-L's pooled_output for HunyuanVideo, WanImageToVideo's concat latents and
clip_vision_output), handed to sample_custom as given. Extras laid along the video's latent frames (concat_latent_image,
concat_mask) must cover the whole video and are cut to each run's frames when these are consecutive (continuation
chunks, the last hierarchical level, the last interpolation pass); runs over spaced frames refuse them.

Frame conditioning on this executor:
- replace: ComfyUI's noise mask (KSamplerX0Inpaint), so the known frames are shown to the model the way ComfyUI's own
  sampling shows noise-masked frames to that model: Wan (and every model with BaseModel's rule) gets the clean latents
  re-noised with the run's own noise by the model's `noise_scaling` (sigma * noise + (1 - sigma) * x for flow models);
  LTX-Video gets them clean with timestep 0 on their tokens (ComfyUI's LTXV turns the mask into per-token timesteps, its
  image-to-video conditioning); HunyuanVideo gets them clean at the step's timestep (ComfyUI's HunyuanVideo
  scale_latent_inpaint, written for its image-to-video "v2 replace"). The model's clean estimate of them is the clean
  latents, and at the end they are the clean latents exactly.
- guidance: reconstruction guidance on the model's clean estimate (`denoised`, after CFG): the gradient of its error on
  the known frames, through the model, moves the estimate by -(weight / 2) * s * gradient, s the signal scale of the
  sampler's x at that sigma (1 for EPS/V in k-diffusion form, 1 - sigma for flow), which is Ho et al.'s step.
- learned: the model's own conditioning for known frames (Wan image-to-video / first-last-frame / Fun InP, VACE, Wan 2.2
  TI2V's clean first latents, LTX-Video's guides, HunyuanVideo image-to-video), built from the known frames' pixels by
  ComfyUI's own node functions (models/comfy_conditioning.py); the result's known frames are what the model made.

Wan 2.2 A14B: with a low-noise expert (`Experts`), every run is the two-expert chain of ComfyUI's Wan 2.2 template.

Every `comfy` import is inside a function: this module is imported only when a ComfyUI MODEL is connected.
"""

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .comfy_conditioning import RunInputs, hand_off_for, input_channels, known_pixels, known_runs, model_name, without_keys
from .comfy_windows import WindowHandler, check_positions, tagged_positive
from .denoiser import Denoiser

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatentLayout:
    """How a model's latents map to pixels: channels, pixels per latent pixel, and pixel frames per latent frame.

    Video VAEs with a causal first frame (temporal > 1) give latent frame 0 one pixel frame and every later latent
    frame `temporal` pixel frames: pixel frames = temporal * (latent frames - 1) + 1.
    """

    channels: int
    downscale: int
    temporal: int

    def pixel_frames(self, latent_frames: int) -> int:
        return self.temporal * (latent_frames - 1) + 1

    def latent_frames(self, pixel_frames: int) -> int:
        """Latent frames of a clip of `pixel_frames` frames; a ValueError names the nearest counts that fit."""
        if pixel_frames < 1 or (pixel_frames - 1) % self.temporal:
            below = max(1, (pixel_frames - 1) // self.temporal * self.temporal + 1)
            raise ValueError(
                f"{pixel_frames} pixel frames do not fit this model's {self.temporal}x temporal compression: "
                f"use {self.temporal} x n + 1 frames, e.g. {below} or {below + self.temporal}"
            )
        return (pixel_frames - 1) // self.temporal + 1

    def pixel_span(self, latent_index: int) -> range:
        """The pixel frames latent frame `latent_index` decodes to in a clip that starts at latent frame 0."""
        if latent_index == 0:
            return range(0, 1)
        return range(self.temporal * (latent_index - 1) + 1, self.temporal * latent_index + 1)


# ComfyUI's latent formats (comfy/latent_formats.py) and their VAEs' compression.
LATENT_LAYOUTS = {
    "Wan21": LatentLayout(16, 8, 4),
    "Wan22": LatentLayout(48, 16, 4),
    "HunyuanVideo": LatentLayout(16, 8, 4),
    "LTXV": LatentLayout(128, 32, 8),
    "Mochi": LatentLayout(12, 8, 6),
    "Cosmos1CV8x8x8": LatentLayout(16, 8, 8),
}

# The pack's scheduler names (sampling/schedulers.py) as ComfyUI sampler and sigma schedule names.
SAMPLER_ALIASES = {
    "unipc": ("uni_pc", None),
    "dpmpp_2m_karras": ("dpmpp_2m", "karras"),
}
# Conditioning extras laid along the video's latent frames (dim 2 of a 5-D tensor): WanImageToVideo,
# WanFirstLastFrameToVideo, WanFunInpaintToVideo, HunyuanImageToVideo, ... A run over part of the video gets them cut
# to its frames.
FRAME_LAID = ("concat_latent_image", "concat_mask")
# Extras the LongVideo samplers cannot honour, and why.
REFUSED_EXTRAS = {
    "keyframe_idxs": "LTXVAddGuide appends its guide frames to the LATENT, which the LongVideo samplers make themselves: "
                     "give the frames as a start clip (continuation start_latent) with method 'learned', which adds "
                     "them as LTX-Video's own guides",
}

# ComfyUI model classes whose blocks add to their activations in place (x += ...), which a backward pass cannot go
# through: reconstruction guidance is refused on them.
IN_PLACE_ACTIVATIONS = {"LTXV", "HunyuanVideo"}

# Wan 2.2 A14B's switch from the high-noise to the low-noise expert (Wan's own boundaries, in sigma = t / 1000).
TEXT_TO_VIDEO_BOUNDARY = 0.875
IMAGE_TO_VIDEO_BOUNDARY = 0.9


@dataclass(frozen=True)
class ComfyConditioning:
    """ComfyUI's CONDITIONING exactly as a node gave it ([[tokens, extras], ...]: T5's attention_mask for LTX-Video,
    the CLIP-L pooled_output for HunyuanVideo, WanImageToVideo's concat_latent_image / concat_mask and
    clip_vision_output, ...): the Prompt.native that ComfyDenoiser hands to ComfyUI's sampling.

    `name` names the input it came from (for errors); `frames` the video frames its frame-laid extras were cut to.
    """

    entries: list
    name: str = "conditioning"
    frames: tuple | None = None

    def for_frames(self, frames: list[int], total: int) -> "ComfyConditioning":
        """This conditioning for a run over latent frames `frames` of a `total`-frame video.

        Frame-laid extras must cover the whole video (`total` latent frames) and are cut to `frames` when these are
        consecutive. Runs over spaced frames (hierarchical keyframes, interpolation passes before the last) are refused:
        the latents of every n-th frame of a causal video VAE are not those frames of the whole video's latents, so
        cutting would hand the model conditioning it was never given.
        """
        laid = [(key, value) for _, extras in self.entries for key, value in extras.items()
                if key in FRAME_LAID and isinstance(value, torch.Tensor) and value.dim() == 5]
        if not laid:
            return self
        for key, value in laid:
            if value.shape[2] != total:
                raise ValueError(f"{self.name}: its '{key}' covers {value.shape[2]} latent frames but the video has {total}: "
                                 "make it for the whole video (e.g. WanImageToVideo's length = the video's pixel frames)")
        if frames != list(range(frames[0], frames[0] + len(frames))):
            raise ValueError(f"{self.name}: its '{laid[0][0]}' is laid along the video's frames, but this run samples "
                             f"latent frames {frames[0]}, {frames[1]}, ... spaced {frames[1] - frames[0]} apart (hierarchical "
                             "keyframes or an interpolation pass before the last); a causal video VAE's latents of spaced "
                             "frames are not those frames of the whole video's latents, so it cannot be cut to them: use "
                             "continuation, hierarchical with depth 1, or interpolation with one pass")
        window = slice(frames[0], frames[0] + len(frames))
        entries = [[tokens, {key: (value[:, :, window] if key in FRAME_LAID and isinstance(value, torch.Tensor)
                                   and value.dim() == 5 else value) for key, value in extras.items()}]
                   for tokens, extras in self.entries]
        return ComfyConditioning(entries, self.name, tuple(frames))


def latent_layout(latent_format) -> LatentLayout:
    """The layout of ComfyUI's latent format (or of the nearest known class it derives from); a ValueError for a format
    whose VAE's compression is not known here (a newer ComfyUI's model, an image model), whose frame counts and sizes
    would come out wrong."""
    for base in type(latent_format).__mro__:
        if base.__name__ in LATENT_LAYOUTS:
            return LATENT_LAYOUTS[base.__name__]
    raise ValueError(f"this model's latent format {type(latent_format).__name__} is not a video format the LongVideo "
                     f"samplers know ({', '.join(LATENT_LAYOUTS)}): its VAE's compression in space and time is "
                     "unknown, so frame counts and sizes would come out wrong; use a model with one of those formats")


def prediction_kind(model_sampling) -> str:
    """'epsilon', 'v_prediction' or 'flow' (CONST), read off ComfyUI's model_sampling classes."""
    names = {base.__name__ for base in type(model_sampling).__mro__}
    if "CONST" in names:
        return "flow"
    if "V_PREDICTION" in names:
        return "v_prediction"
    if "EPS" in names:
        return "epsilon"
    raise ValueError(f"model sampling {type(model_sampling).__name__} is none of EPS, V_PREDICTION and CONST")


def _text_width(diffusion_model) -> int | None:
    """Token embedding width the model takes (umT5 / T5 / LLaVA width 4096 for Wan, LTXV and HunyuanVideo)."""
    for path in ("text_embedding.0", "caption_projection.linear_1", "txt_in.input_embedder"):
        module = diffusion_model
        for name in path.split("."):
            module = getattr(module, name, None) if not name.isdigit() else (module[int(name)] if module is not None else None)
            if module is None:
                break
        if module is not None and hasattr(module, "in_features"):
            return int(module.in_features)
    return None


class Experts:
    """Wan 2.2 A14B's two experts: `high` samples the noisiest steps of every run, `low` the rest.

    The switch is `switch_step` (the low-noise expert from that step of a run on, as end_at_step of the Wan 2.2
    template's first KSamplerAdvanced) or, when 0, the boundary: the steps that start at a sigma of at least `boundary`
    run on the high-noise expert, as Wan's own sampler switches (None: Wan's 0.875 for text-to-video, 0.9 for a model
    with image input channels).
    """

    def __init__(self, high, low, boundary: float | None = None, switch_step: int = 0):
        self.high, self.low, self.switch_step = high, low, switch_step
        if boundary is None:
            image_model = (input_channels(high) or 0) > high.get_model_object("latent_format").latent_channels
            boundary = IMAGE_TO_VIDEO_BOUNDARY if image_model else TEXT_TO_VIDEO_BOUNDARY
        self.boundary = boundary

    def high_steps(self, sigmas: torch.Tensor) -> int:
        steps = len(sigmas) - 1
        if self.switch_step:
            return min(self.switch_step, steps)
        return sum(1 for sigma in sigmas[:-1].tolist() if sigma >= self.boundary)

    def stages(self, sigmas: torch.Tensor) -> list[tuple[object, torch.Tensor]]:
        """(expert, its sigmas) for each expert that has steps in a run over `sigmas`."""
        split = self.high_steps(sigmas)
        parts = [(self.high, sigmas[: split + 1]), (self.low, sigmas[split:])]
        return [(model, part) for model, part in parts if len(part) > 1]

    def hand_over(self, samples: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, inputs: RunInputs):
        """(latent image, noise) for the low-noise expert to go on from the high-noise expert's `samples` at `sigma`.

        Without a noise mask this is the template's chain: the leftover-noise latent and no new noise. With one, that
        chain would show the kept frames to the second expert as the first one's noisy output re-scaled without noise
        (KSamplerX0Inpaint re-noises the latent image with the stage's zero noise), so the second expert gets the run's
        own noise and, for the sampled frames, the latent that this noise scales back to the same starting point; the
        kept frames stay the clean latent image, re-noised every step as in one run.
        """
        if inputs.noise_mask is None:
            return samples, torch.zeros_like(noise)
        latent_format = self.low.get_model_object("latent_format")
        sampling = self.low.get_model_object("model_sampling")
        sigma = sigma.reshape(1).float()
        zeros = torch.zeros_like(noise)
        signal = sampling.noise_scaling(sigma, zeros, torch.ones_like(noise))
        offset = sampling.noise_scaling(sigma, noise, zeros)
        continued = latent_format.process_out(latent_format.process_in(samples) - offset / signal)
        mask = inputs.noise_mask.float().cpu()
        return continued * mask + inputs.latent.float().cpu() * (1 - mask), noise


class ComfyDenoiser(Denoiser):
    """A ComfyUI MODEL (its ModelPatcher) that the pack's strategies drive; ComfyUI's sampling runs every clip.

    sigma_schedule: ComfyUI's scheduler name (simple, normal, karras, beta, ...) giving the sigmas from the model's
    own model_sampling. sampler: a ComfyUI sampler name used for every run, or None to take the strategy's
    `scheduler` name (euler, dpmpp_2m, unipc -> uni_pc, ...; any ComfyUI sampler name also works).
    """

    samples_itself = True

    def __init__(self, patcher, sigma_schedule: str = "simple", sampler: str | None = None, *, vae=None,
                 clip_vision=None, low_noise=None, boundary: float | None = None, switch_step: int = 0):
        self.patcher = patcher
        self.sigma_schedule = sigma_schedule
        self.sampler = sampler
        self.latent_format = patcher.get_model_object("latent_format")
        self.model_sampling = patcher.get_model_object("model_sampling")
        self.layout = latent_layout(self.latent_format)
        self.latent_channels = self.layout.channels
        self.downscale = self.layout.downscale
        self.context_width = _text_width(patcher.get_model_object("diffusion_model")) or 4096
        self.scheduler_config = {"prediction_type": prediction_kind(self.model_sampling)}
        self.vae = vae
        self.clip_vision = clip_vision
        self.hand_off = hand_off_for(patcher)
        self.experts = Experts(patcher, low_noise, boundary, switch_step) if low_noise is not None else None
        self.windows = None  # (WindowPlan, timeline prompts): runs go through co-denoising's windows (with_windows)

    def check_window_positions(self, positions: str) -> None:
        check_positions(positions, self.patcher, self.name)

    def with_windows(self, plan, prompts: list) -> "ComfyDenoiser":
        """This model with every run sampled as co-denoising's windows (sampling/co_denoise.py's WindowPlan) inside
        ComfyUI's own sampling (models/comfy_windows.py), with `prompts` (TextGuidance) along the timeline."""
        self.check_window_positions(plan.positions)
        windowed = copy.copy(self)
        windowed.windows = (plan, prompts)
        return windowed

    @property
    def takes_known_frames(self) -> bool:
        return self.hand_off is not None

    def estimate_call_bytes(self, batch, frames, height, width) -> int:
        """ComfyUI's own estimate (BaseModel.memory_required, what its sampling plans offloading with), for one
        half of the guidance batch: ComfyUI runs the halves apart when both do not fit."""
        return int(self.patcher.model.memory_required([batch, self.latent_channels, frames, height, width]))

    @property
    def name(self) -> str:
        return model_name(self.patcher)

    def check_frame_conditioning(self, method: str, patterns, frame_guidance: float = 1.0) -> None:
        """Refuse, before anything is sampled, frame conditioning this model cannot honour on clips whose known latent
        frames are `patterns` ((indices, clip frames) for every kind of run a strategy samples); for 'learned', log
        which of the model's own conditionings will carry the known frames."""
        self._check_method(method)
        if method == "learned":
            self._check_learned(patterns, frame_guidance)
            log.info("frame conditioning 'learned' on %s: %s (known frames %s)", self.name, self.hand_off.nodes,
                     self.hand_off.where)

    def _check_method(self, method: str) -> None:
        if method == "resample":
            raise ValueError(f"frame conditioning 'resample' is not available for ComfyUI models ({self.name}): RePaint's "
                             "passes step back inside the sampler, which ComfyUI's samplers do not expose: use 'replace', "
                             "'guidance', 'blend' (infill, interpolation) or 'learned'")
        family = IN_PLACE_ACTIVATIONS.intersection(base.__name__ for base in type(self.patcher.model).__mro__)
        if method == "guidance" and family:
            raise ValueError(f"frame conditioning 'guidance' differentiates through the model, and ComfyUI's {family.pop()} "
                             f"({self.name}) changes its activations in place, which autograd cannot go through: use "
                             "'replace', 'blend' (infill, interpolation) or 'learned'")

    def _check_learned(self, patterns, frame_guidance: float) -> None:
        if self.hand_off is None:
            raise ValueError(f"frame conditioning 'learned' needs a model with its own image conditioning, and this one "
                             f"({self.name}) has none: use a Wan image-to-video, first-last-frame, Fun InP, VACE or "
                             "Wan 2.2 TI2V model, LTX-Video or HunyuanVideo image-to-video, or choose 'replace'")
        if frame_guidance != 1.0:
            raise ValueError(f"frame_guidance {frame_guidance} is for the pack's own models; ComfyUI models take their "
                             "known frames through their own conditioning: set frame_guidance to 1")
        if self.vae is None:
            raise ValueError(f"frame conditioning 'learned' on {self.name} hands the known frames over as pixels "
                             f"({self.hand_off.nodes}): connect the model's VAE to LongVideoComfyModel's 'vae'")
        if self.hand_off.needs_clip_vision and self.clip_vision is None:
            raise ValueError(f"{self.name} reads a CLIP vision embedding of its known frames ({self.hand_off.nodes}): "
                             "connect Load CLIP Vision (clip_vision_h) to LongVideoComfyModel's 'clip_vision'")
        for indices, frames in patterns:
            self.hand_off.check(known_runs(indices), frames)

    def native_conditioning(self, conditioning, name: str = "conditioning") -> ComfyConditioning:
        """ComfyUI's CONDITIONING list as the Prompt.native this model samples with; refuses extras it cannot honour."""
        for _, extras in conditioning:
            for key in extras:
                if key in REFUSED_EXTRAS and extras[key] is not None:
                    raise ValueError(f"{name}: its '{key}' cannot be used by the LongVideo samplers: {REFUSED_EXTRAS[key]}")
        return ComfyConditioning(list(conditioning), name)

    def load(self) -> torch.device:
        # ComfyUI's sampling loads the model through its model management (load_models_gpu) at every run.
        return self.patcher.load_device

    def __call__(self, latents, timestep, context, known=None):
        raise TypeError("a ComfyUI model is run by ComfyUI's sampling: call sampling.denoise.denoise, not the model")

    def sampler_and_schedule(self, scheduler: str) -> tuple[str, str]:
        import comfy.samplers

        name, schedule = self.sampler or scheduler, self.sigma_schedule
        if name in SAMPLER_ALIASES:
            name, forced = SAMPLER_ALIASES[name]
            schedule = forced or schedule
        if name not in comfy.samplers.KSampler.SAMPLERS:
            raise ValueError(f"sampler '{name}' is not one of ComfyUI's: choose one of {', '.join(comfy.samplers.KSampler.SAMPLERS)}")
        if schedule not in comfy.samplers.KSampler.SCHEDULERS:
            raise ValueError(f"sigma schedule '{schedule}' is not one of ComfyUI's: choose one of {', '.join(comfy.samplers.KSampler.SCHEDULERS)}")
        return name, schedule

    def sigmas(self, steps: int, scheduler: str, strength: float = 1.0) -> torch.Tensor:
        """The sigmas ComfyUI's KSampler uses for `steps` at denoise `strength` (its penultimate-sigma rule included)."""
        import comfy.samplers

        name, schedule = self.sampler_and_schedule(scheduler)
        return comfy.samplers.KSampler(self.patcher, steps=steps, device="cpu", sampler=name, scheduler=schedule,
                                       denoise=strength, model_options=self.patcher.model_options).sigmas.cpu()

    def sample(self, guidance, shape, *, noise: torch.Tensor, steps: int, seed, scheduler: str,
               init_latents: torch.Tensor | None = None, strength: float = 1.0, conditioning=None,
               callback: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """One run of ComfyUI's sampling over `shape` [B, C, T, H, W] from standard normal `noise` (float32, CPU).

        Latents in and out are in ComfyUI's LATENT space (what VAEEncode gives and VAEDecode takes); ComfyUI scales
        them to the model's space itself. Returns float32 on the CPU.
        """
        import comfy.samplers

        name, _ = self.sampler_and_schedule(scheduler)
        sigmas = self.sigmas(steps, scheduler, strength)
        latent = torch.zeros(shape) if init_latents is None else init_latents.float().cpu().expand(*shape).clone()
        mask = None
        sampler = comfy.samplers.sampler_object(name)
        method = getattr(conditioning, "method", None)
        if conditioning is not None and method != "learned":
            index = list(conditioning.known.indices)
            clean = conditioning.known.latents.float().cpu().expand(shape[0], -1, -1, -1, -1)
            if method == "replace":
                # ComfyUI's noise mask: 1 = sample, 0 = keep the latent image (re-noised every step by the model's own rule).
                # The sampled frames hold the latent that ComfyUI scales to zero in the model's space, so they start from
                # pure noise with every model sampling (EPS adds the latent image to the starting noise).
                if init_latents is None:
                    latent = self.latent_format.process_out(torch.zeros(shape))
                latent[:, :, index] = clean
                mask = torch.ones(shape[0], 1, *shape[2:])
                mask[:, :, index] = 0.0
            elif method == "guidance":
                self._check_method(method)
                sampler = self._guided(sampler, index, clean, conditioning.weight)
            else:
                self._check_method(method)
                raise ValueError(f"frame conditioning '{method}' is not available for ComfyUI models")
        if self.windows is not None:
            if method == "learned":
                raise ValueError("co-denoising ComfyUI's models keeps start frames with 'replace' (their own image "
                                 "conditioning is made for one clip, not for windows): choose 'replace'")
            prompts = self.windows[1]
            negative = prompts[0].native_negative[0].entries if prompts[0].native_negative else [[prompts[0].negative, {}]]
            runs = [(list(range(shape[0])), RunInputs(tagged_positive(prompts), negative if guidance.uses_cfg else None,
                                                      latent, mask, shape[2]))]
        elif method == "learned":
            runs = self._learned_runs(guidance, shape, conditioning)
        else:
            runs = [(rows, RunInputs(positive, negative, latent[rows], None if mask is None else mask[rows], shape[2]))
                    for rows, positive, negative in self._conditioning_groups(guidance, shape[0])]
        total = len(sigmas) - 1
        seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed] * shape[0]
        samples = torch.empty(shape)
        for rows, inputs in runs:
            run_noise = noise[rows].float()
            if inputs.latent.shape[2] > shape[2]:  # guide frames appended by the model's conditioning: kept, not sampled
                extra = inputs.latent.shape[2] - shape[2]
                run_noise = torch.cat([run_noise, torch.zeros(len(rows), shape[1], extra, *shape[3:])], dim=2)
            samples[rows] = self._sample_run(inputs, run_noise, guidance, sampler, sigmas, int(seeds[rows[0]]),
                                             None if callback is None else (lambda step, x: callback(step, total, x)))
        if mask is not None:
            samples[:, :, index] = clean  # exactly the given latents (the model-space round trip rounds)
        return samples

    def _sample_run(self, inputs: RunInputs, noise, guidance, sampler, sigmas, seed: int, callback) -> torch.Tensor:
        """ComfyUI's sampling of one run: the model's KSampler, or with a low-noise expert the two-expert chain of
        ComfyUI's Wan 2.2 template (KSamplerAdvanced on the high-noise expert returning its leftover noise, then on the
        low-noise expert). Returns the run's clip frames (float32, CPU)."""
        import comfy.sample

        cfg = guidance.cfg if inputs.negative is not None else 1.0
        negative = inputs.positive if inputs.negative is None else inputs.negative
        stages = [(self.patcher, sigmas)] if self.experts is None else self.experts.stages(sigmas)
        latent, stage_noise, done = inputs.latent, noise, 0
        for number, (model, part) in enumerate(stages):
            if self.windows is not None:
                model = model.clone()
                model.model_options["context_handler"] = WindowHandler(self.windows[0])
            step_callback = None if callback is None else (lambda step, denoised, x, _, d=done: callback(d + step + 1, x))
            latent = comfy.sample.sample_custom(model, stage_noise, cfg, sampler, part, inputs.positive, negative, latent,
                                                noise_mask=inputs.noise_mask, callback=step_callback, disable_pbar=True,
                                                seed=seed).float().cpu()
            done += len(part) - 1
            if number + 1 < len(stages):
                latent, stage_noise = self.experts.hand_over(latent, noise, part[-1], inputs)
        return latent[:, :, : inputs.frames]

    def _learned_runs(self, guidance, shape, conditioning) -> list[tuple[list[int], RunInputs]]:
        """One ComfyUI run per batch item whose known frames reach the model through its own conditioning, built by
        the hand-off from the known frames' pixels (models/comfy_conditioning.py)."""
        known = conditioning.known
        self._check_learned([(known.indices, shape[2])], conditioning.frame_guidance)
        height, width = shape[3] * self.downscale, shape[4] * self.downscale
        runs = []
        for rows, positive, negative in self._conditioning_groups(guidance, shape[0]):
            for row in rows:
                pick = slice(row, row + 1) if known.latents.shape[0] > 1 else slice(0, 1)
                context = None if known.context is None else known.context[pick]
                pixels = known_pixels(self.vae, known.latents[pick].float(), list(known.indices), context,
                                      self.layout.temporal)
                own = without_keys(positive, self.hand_off.sets)
                inputs = self.hand_off.build(self.vae, self.clip_vision, own,
                                             own if negative is None else without_keys(negative, self.hand_off.sets),
                                             pixels, shape[2], width, height, self.layout.pixel_frames(shape[2]))
                if negative is None:
                    inputs.negative = None
                runs.append(([row], inputs))
        return runs

    @staticmethod
    def _conditioning_groups(guidance, batch: int):
        """(batch rows, positive, negative or None) per ComfyUI sampling run: ComfyUI applies one CONDITIONING to a whole
        batch, so items with their own conditioning (hierarchical segments with different prompts) run apart, and items
        that share one run together. Prompts without native conditioning become [[tokens, {}]] (one batched run)."""
        if guidance.native_positive is None:
            positive = [[guidance.positive, {}]]
            negative = [[guidance.negative, {}]] if guidance.uses_cfg else None
            return [(list(range(batch)), positive, negative)]
        if guidance.uses_cfg and guidance.native_negative is None:
            raise ValueError("the positive prompt carries ComfyUI conditioning but the negative does not: give both as CONDITIONING")

        def pick(natives, row):
            return natives[row if len(natives) > 1 else 0]

        groups: dict[tuple, list[int]] = {}
        for row in range(batch):
            key = (id(pick(guidance.native_positive, row)),
                   id(pick(guidance.native_negative, row)) if guidance.uses_cfg else None)
            groups.setdefault(key, []).append(row)
        return [(rows, pick(guidance.native_positive, rows[0]).entries,
                 pick(guidance.native_negative, rows[0]).entries if guidance.uses_cfg else None)
                for rows in groups.values()]

    def _guided(self, sampler, index: list[int], clean: torch.Tensor, weight: float):
        """ComfyUI's sampler `sampler` stepping with the reconstruction-guided clean estimate."""
        import comfy.samplers

        inner, latent_format, model_sampling = sampler.sampler_function, self.latent_format, self.model_sampling

        def function(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
            # Made outside inference mode: ComfyUI runs nodes under torch.inference_mode, whose tensors autograd refuses.
            with torch.inference_mode(False):
                positions = torch.tensor(index, device=x.device)
                target = latent_format.process_in(clean.to(x.device)).to(x.dtype).clone()
            # The network this run calls (KSamplerX0Inpaint -> CFGGuider -> BaseModel, as ComfyUI's code reaches it).
            network = getattr(getattr(model, "inner_model", None), "inner_model", None)
            network = self.patcher.model if network is None else network

            def guided(x, sigma, **kwargs):
                with torch.inference_mode(False), torch.enable_grad():
                    restore = _weights_for_autograd(network)
                    try:
                        noisy = x.detach().clone().requires_grad_(True)
                        denoised = model(noisy, sigma, **kwargs)
                        error = (denoised.index_select(2, positions) - target).pow(2).sum()
                        (gradient,) = torch.autograd.grad(error, noisy)
                    finally:
                        restore()
                shape = (x.shape[0],) + (1,) * (x.dim() - 1)
                signal = model_sampling.noise_scaling(sigma.reshape(-1)[:1].expand(x.shape[0]), torch.zeros(shape, device=x.device),
                                                      torch.ones(shape, device=x.device))
                return denoised.detach() - weight * signal / 2 * gradient

            return inner(guided, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **options)

        return comfy.samplers.KSAMPLER(function, sampler.extra_options, sampler.inpaint_options)


def _weights_for_autograd(network: torch.nn.Module) -> Callable[[], None]:
    """Let autograd differentiate through `network` whose weights are inference tensors, until the returned function
    is called; with normal weights nothing changes.

    ComfyUI runs every node under torch.inference_mode, UNETLoader too, so the weights it loads are inference tensors,
    which autograd refuses to save for a backward pass. ComfyUI's layers (comfy.ops) copy a weight that has a
    weight_function (bias_function) at every forward, as they do for LoRAs on offloaded layers: such a function is
    added, and the copy, made outside inference mode, is a normal tensor. These copies live until the backward pass,
    as ComfyUI's casts do when it offloads. The few other inference parameters and buffers (modulation tables,
    fp8 scales, the sigmas) are replaced by normal copies while the call runs.
    """

    def normal(tensor):
        return tensor.clone() if tensor.is_inference() else tensor

    undo = []
    for module in network.modules():
        copied_by_layer = set()
        if hasattr(module, "comfy_cast_weights"):
            for name in ("weight", "bias"):
                tensor = getattr(module, name, None)
                if isinstance(tensor, torch.Tensor) and tensor.is_inference():
                    functions = f"{name}_function"
                    undo.append((module, functions, module.__dict__.get(functions)))
                    setattr(module, functions, [*getattr(module, functions), normal])
                    copied_by_layer.add(name)
        for store, kind in ((module._parameters, torch.nn.Parameter), (module._buffers, None)):
            for name, tensor in list(store.items()):
                if tensor is not None and name not in copied_by_layer and tensor.is_inference():
                    undo.append((store, name, tensor))
                    store[name] = tensor.clone() if kind is None else kind(tensor.clone(), requires_grad=False)

    def restore():
        for owner, name, value in reversed(undo):
            if isinstance(owner, dict):
                owner[name] = value
            elif value is None:  # the module used its class's (empty) list
                delattr(owner, name)
            else:
                setattr(owner, name, value)

    return restore


class ComfyVAE:
    """ComfyUI's VAE (from VAELoader) behind the pack's VAE interface: streaming decode for LongVideoSaveVideo.

    Video VAEs with a causal first frame (Wan, HunyuanVideo, LTXV) cannot decode latent batches independently: each
    batch would start with a one-pixel-frame 'first' frame and a seam.
    - The Wan 2.1 VAE (ComfyUI's comfy.ldm.wan.vae.WanVAE, also Wan 2.2 A14B's) decodes frame by frame with a causal
      feature cache; with `carry_cache` the cache goes on from batch to batch, so the batches are exactly the whole
      decode, with a few frames' features held between batches (the decoder's own memory, bounded).
    - Any other video VAE: every batch after the first is decoded with `context` latent frames before it, whose pixel
      frames are dropped: the batch comes out with temporal x (its latent frames) pixel frames, continuing the video.
      The causal decoder's memory of earlier frames is cut at the context, so batches differ from one whole decode
      (docs/comfyui_models.md states the measured difference).
    """

    def __init__(self, vae, context: int = 2, carry_cache: bool = True):
        self.vae = vae
        self.context = context
        self.carry_cache = carry_cache
        self.latent_channels = int(vae.latent_channels)
        self.downscale = _ratio(vae.downscale_ratio)
        upscale = vae.upscale_ratio
        self.temporal = int(upscale[0](2) - upscale[0](1)) if isinstance(upscale, tuple) and callable(upscale[0]) else 1
        self.layout = LatentLayout(self.latent_channels, self.downscale, self.temporal)

    def pixel_frames(self, latent_frames: int) -> int:
        return self.layout.pixel_frames(latent_frames)

    def decode_batches(self, latents: torch.Tensor, frames_per_batch: int):
        """Yield IMAGE batches [n, H, W, 3] (float32, 0..1, CPU) for `latents` [B, C, T, h, w], `frames_per_batch` latent
        frames at a time (video after video); only one batch of pixels exists at a time."""
        batch, _, frames = latents.shape[:3]
        if self.carry_cache and self.streams_exactly:
            for b in range(batch):
                yield from self._stream_wan21(latents[b : b + 1], frames_per_batch)
            return
        for b in range(batch):
            for start in range(0, frames, frames_per_batch):
                stop = min(frames, start + frames_per_batch)
                first = max(0, start - self.context) if self.temporal > 1 else start
                pixels = self.vae.decode(latents[b : b + 1, :, first:stop])
                pixels = pixels.reshape(-1, *pixels.shape[-3:])  # [frames, H, W, 3]
                skip = self.layout.pixel_frames(start - first) if start > first else 0
                yield pixels[skip:, ..., :3].float().cpu()

    @property
    def streams_exactly(self) -> bool:
        """Whether this VAE is ComfyUI's Wan 2.1 VAE, whose causal feature cache can go on across decode batches."""
        model = getattr(self.vae, "first_stage_model", None)
        return (type(model).__name__ == "WanVAE" and type(model).__module__ == "comfy.ldm.wan.vae"
                and hasattr(model, "decoder") and hasattr(model, "conv2"))

    def _stream_wan21(self, latents: torch.Tensor, frames_per_batch: int):
        """ComfyUI's WanVAE.decode (conv2, then the decoder one latent frame at a time on one feature cache) and
        VAE.decode's placement and output processing, with the cache kept from one batch to the next."""
        import comfy.model_management
        from comfy.ldm.wan.vae import count_conv3d

        vae, model = self.vae, self.vae.first_stage_model
        shape = (1, latents.shape[1], min(frames_per_batch, latents.shape[2]), *latents.shape[3:])
        comfy.model_management.load_models_gpu([vae.patcher], memory_required=vae.memory_used_decode(shape, vae.vae_dtype),
                                               force_full_load=vae.disable_offload)
        cache = [None] * count_conv3d(model.decoder)
        with torch.inference_mode():
            for start in range(0, latents.shape[2], frames_per_batch):
                x = model.conv2(latents[:, :, start : start + frames_per_batch].to(vae.vae_dtype).to(vae.device))
                out = torch.cat([model.decoder(x[:, :, i : i + 1], feat_cache=cache, feat_idx=[0]) for i in range(x.shape[2])], 2)
                pixels = vae.process_output(out.to(vae.output_device).float()).movedim(1, -1)
                yield pixels.reshape(-1, *pixels.shape[-3:])[..., :3].float().cpu()

    def encode(self, images: torch.Tensor, frames_per_batch: int) -> torch.Tensor:
        """Latents [1, C, t, h, w] (float32, CPU, ComfyUI's LATENT space) of IMAGE frames [T, H, W, 3]."""
        return self.vae.encode(images[..., :3]).float().cpu()


def _ratio(ratio) -> int:
    if isinstance(ratio, tuple):
        return int(ratio[-1])
    return int(ratio)
