from ..sampling import denoise as denoise_loop
from ..sampling.schedulers import SCHEDULER_NAMES
from ..utils.comfy import Progress, intermediate_device
from .common import SAMPLING, MODEL, NodeInputError, check_fits, conditioning_prompt, graph_check, video_latents, check_numbers

SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                "tooltip": "Noise seed. The noise is drawn on the CPU, so a seed gives the same video on every device."})
STEPS = ("INT", {"default": 20, "min": 1, "max": 1000, "tooltip": "Denoising steps."})
CFG = ("FLOAT", {"default": 9.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                 "tooltip": "Classifier-free guidance scale; 1 or less skips the negative pass."})
FRAME_GUIDANCE = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": (
    "learned method only (ignored by the others): a guidance scale of the known frames' own, pulling the new frames "
    "towards them. 1: off (both CFG passes see the known frames). Above 1 one more model pass per step runs without "
    "them, none more when it equals the CFG; 3 (with CFG 3) joins the embedded model's in-betweens to their keyframes "
    "most smoothly.")})
SCHEDULER = (list(SCHEDULER_NAMES), {"default": "dpmpp_2m", "tooltip": "The diffusers scheduler, set up with the model's training schedule."})


class LongVideoSampler:
    DESCRIPTION = "Samples a video latent with a UNet3D model: text-to-video, or video-to-video when denoise is below 1."
    CATEGORY = SAMPLING
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The sampled video latent: give it to LongVideoSaveVideo with the vae, or to LongVideoDecode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The video model from LongVideoModelLoader."}),
                "positive": ("CONDITIONING", {"tooltip": "What the video shows."}),
                "negative": ("CONDITIONING", {"tooltip": "What to steer away from."}),
                "latent_image": ("LATENT", {"tooltip": "An empty latent sets the size; a filled one is the start for denoise < 1."}),
                "seed": SEED,
                "steps": STEPS,
                "cfg": CFG,
                "scheduler": SCHEDULER,
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                      "tooltip": "1 samples from pure noise; lower values keep more of latent_image."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, steps=None, denoise=None):
        def check(steps, denoise):
            if steps is not None and denoise is not None and denoise_loop.count_steps(steps, denoise) < 1:
                raise NodeInputError(f"{cls.__name__}: {steps} steps at denoise {denoise} run no step: raise steps or denoise "
                                     f"(steps x denoise must be at least 1)")

        return graph_check(cls, locals(), check)

    def sample(self, model, positive, negative, latent_image, seed, steps, cfg, scheduler, denoise=1.0):
        check_numbers(self, locals())
        node = "LongVideoSampler"
        if model.requires_known_frames:
            raise NodeInputError(f"{node}: this model only works from known frames (a ContinuitySeq model continues them: "
                                 "use LongVideoContinuationSampler with method 'learned' and a start image or latent; a "
                                 "hint-channel UNet interpolates them: use LongVideoLatentInterpolate)")
        latents = video_latents(latent_image, node, "latent_image", model.latent_channels)
        if not 0.0 < denoise <= 1.0:
            raise NodeInputError(f"{node}: denoise must be in (0, 1], got {denoise}")
        if denoise_loop.count_steps(steps, denoise) < 1:
            raise NodeInputError(f"{node}: {steps} steps at denoise {denoise} run no step: raise steps or denoise")
        batch, _, frames, height, width = latents.shape
        check_fits(node, model, batch=batch, call_frames=frames, kept_frames=frames, copies=4, height=height, width=width,
                   change="lower frames, width or height, or sample a long video with the continuation, co-denoise or "
                          "hierarchical sampler (or LongVideoContextWindows)")
        guidance = denoise_loop.TextGuidance.from_prompts(
            conditioning_prompt(positive, node, "positive", model), conditioning_prompt(negative, node, "negative", model), cfg)
        with Progress(denoise_loop.count_steps(steps, denoise), "sampling") as progress:
            samples = denoise_loop.denoise(
                model, guidance, tuple(latents.shape), steps=steps, seed=seed, scheduler=scheduler,
                init_latents=latents if denoise < 1.0 else None, strength=denoise,
                callback=lambda step, total, _: progress.update(),
            )
        return ({"samples": samples.to(intermediate_device())},)

