"""See and fix drift in the graph: a seam-and-drift report of any video, and colour matching at chunk joins."""

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..utils import colour_match
from ..utils.comfy import Progress, intermediate_device, output_directory
from ..utils.video_io import VideoOutputError, check_output_prefix, reserve_output_path
from ..utils.video_report import FLOW_SHORT_SIDE, draw_report, measure_frames, summarise
from .common import LATENT_INFO, VAE, VIDEO, NodeInputError, check_finite_frames, check_numbers, video_latents
from .joins import latent_joins, pixel_index
from .latents import FRAMES_PER_BATCH, _check_host_memory, pixel_frames

JOINS_INPUT = ("STRING", {"default": "", "tooltip": (
    "Where the video's pieces meet, in frames of the video (frame t: the step from t - 1 to t). Empty: the joins the "
    "sampler put in 'samples' (converted to pixel frames through the VAE). Or a list ('16, 30, 44'), 'every 16', or "
    "'none'.")})
SOURCE_INPUTS = {
    "images": ("IMAGE", {"tooltip": "The video as frames. Or leave it empty and connect samples + vae."}),
    "samples": ("LATENT", {"tooltip": (
        "The sampler's LATENT: decoded batch by batch with vae when 'images' is empty (memory stays flat); with "
        "'images' connected, only where its joins are is read from it.")}),
    "vae": (VAE, {"tooltip": "Decodes samples (and turns its latent joins into pixel frames: 4 per latent frame for Wan)."}),
}


@dataclass
class Source:
    """A video to read: `frames` pixel frames, `batches()` yields them afresh each call; joins in pixel frames."""

    frames: int
    size: tuple[int, int]  # (height, width)
    batches: Callable[[], Iterator]
    joins: list[int]
    keyframes: list[int]
    carried: list[int] | None
    joins_from: str


def video_source(node: str, images, samples, vae, joins: str, frames_per_batch: int) -> Source:
    """The frames and the joins a report or colour match reads, checked: clear errors name `node` and the input."""
    if frames_per_batch < 1:
        raise NodeInputError(f"{node}: frames_per_batch is {frames_per_batch}: give at least 1")
    if images is not None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] < 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise NodeInputError(f"{node}: 'images' must be an IMAGE [frames, height, width, 3], got {shape}")
        check_finite_frames(node, "images", images[..., :3], frame_dim=0)
        frames, size = images.shape[0], tuple(images.shape[1:3])

        def batches():
            return (images[s : s + frames_per_batch, ..., :3] for s in range(0, frames, frames_per_batch))

        _check_latent(node, samples)
    elif samples is not None:
        if vae is None:
            raise NodeInputError(f"{node}: 'samples' needs 'vae' to decode them: connect the VAE from "
                                 "LongVideoModelLoader (or LongVideoComfyModel), or connect 'images' instead")
        latents = video_latents(samples, node, "samples", vae.latent_channels)  # refuses NaN and infinite values
        first = latents[:1]  # a batch of videos: the first is read
        frames = pixel_frames(vae, latents.shape[2])
        size = (latents.shape[3] * vae.downscale, latents.shape[4] * vae.downscale)

        def batches():
            return vae.decode_batches(first, frames_per_batch)

    else:
        raise NodeInputError(f"{node}: connect 'images', or 'samples' and 'vae'")
    if frames < 2:
        raise NodeInputError(f"{node}: the video has {frames} frame{'s' if frames != 1 else ''}; it needs at least 2 "
                             "(motion, flicker and drift are measured between frames)")
    if joins.strip():
        return Source(frames, size, batches, parse_joins(node, joins, frames), [], None, "input")
    if samples is None:
        return Source(frames, size, batches, [], [], None, "none")
    facts = latent_joins(samples)
    if facts is None:
        info = samples.get(LATENT_INFO) if isinstance(samples, dict) else None
        if isinstance(info, dict) and "joins" in info:
            raise NodeInputError(
                f"{node}: the joins in 'samples' were made for {info.get('latent_frames')} latent frames but it holds "
                f"{samples['samples'].shape[2]} (a node between the sampler and this one changed its length): type "
                "the joins into 'joins', or connect the sampler's own LATENT")
        return Source(frames, size, batches, [], [], None, "none")
    temporal = _temporal(node, vae, latent_frames=facts["latent_frames"], pixel=frames)
    to_pixels = [pixel_index(j, temporal) for j in facts["joins"]]
    carried = None
    if facts["carried"] is not None:
        carried = [pixel_index(j, temporal) - pixel_index(j - k, temporal) for j, k in zip(facts["joins"], facts["carried"])]
    keyframes = [pixel_index(k, temporal) for k in facts["keyframes"]]
    return Source(frames, size, batches, to_pixels, keyframes, carried, "sampler")


def _check_latent(node: str, samples) -> None:
    if samples is not None and not (isinstance(samples, dict) and isinstance(samples.get("samples"), torch.Tensor)):
        raise NodeInputError(f"{node}: 'samples' is not a LATENT: connect the sampler's LATENT output")


def _temporal(node: str, vae, latent_frames: int, pixel: int) -> int:
    """Pixel frames per latent frame after the first: the VAE's, or what the frame counts say."""
    if vae is not None and hasattr(vae, "layout"):
        temporal = vae.layout.temporal
    elif vae is not None:
        temporal = 1
    elif pixel == latent_frames:
        return 1
    elif latent_frames > 1 and (pixel - 1) % (latent_frames - 1) == 0:
        return (pixel - 1) // (latent_frames - 1)
    else:
        raise NodeInputError(f"{node}: 'images' has {pixel} frames, which no VAE makes of the {latent_frames} latent "
                             "frames of 'samples': connect the LATENT these frames were decoded from")
    if temporal * (latent_frames - 1) + 1 != pixel:
        raise NodeInputError(f"{node}: 'images' has {pixel} frames but 'samples' decodes to "
                             f"{temporal * (latent_frames - 1) + 1}: connect the LATENT these frames were decoded from")
    return temporal


def parse_joins(node: str, text: str, frames: int) -> list[int]:
    """Joins typed by a user: 'none', 'every N', or frame numbers separated by commas or spaces; checked against the
    video's `frames`."""
    text = text.strip().lower()
    if text == "none":
        return []
    every = re.fullmatch(r"every\s+(\d+)", text)
    if every:
        step = int(every.group(1))
        if step < 1:
            raise NodeInputError(f"{node}: 'joins' is '{text}': give every N with N at least 1")
        return list(range(step, frames, step))
    parts = [p for p in re.split(r"[\s,;]+", text) if p]
    if not all(re.fullmatch(r"\d+", p) for p in parts):
        raise NodeInputError(f"{node}: 'joins' is '{text}': give frame numbers ('16, 30, 44'), 'every 16', 'none', or "
                             "leave it empty to use the sampler's joins")
    joins = [int(p) for p in parts]
    outside = [j for j in joins if not 0 < j < frames]
    if outside:
        raise NodeInputError(f"{node}: 'joins' holds {', '.join(map(str, outside))}, outside the video's frames 1 to "
                             f"{frames - 1} (a join t is the step from frame t - 1 to t): fix the list or leave it empty")
    if joins != sorted(set(joins)):
        raise NodeInputError(f"{node}: 'joins' must rise frame after frame without repeats, got '{text}'")
    return joins


class LongVideoReport:
    DESCRIPTION = (
        "Measures how a long video holds together, without a model: motion (optical flow) and the seam step at each "
        "join against the interior steps, CIELAB colour and its Delta E to the first chunk, brightness, contrast, "
        "flicker and sharpness, per chunk, at each join, and their drift from the first 15% of the frames to the "
        "last. Returns a plot and the numbers (JSON); with save on, writes both into the output folder and shows the "
        "plot on the node."
    )
    CATEGORY = VIDEO
    FUNCTION = "report"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("plot", "report")
    OUTPUT_TOOLTIPS = (
        "The figures over the frames, joins as lines, the steps across them orange, jumps red (one IMAGE frame).",
        "The numbers as JSON: summary, drift, each join, each chunk, and every figure per frame (docs/report.md).",
    )
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "filename_prefix": ("STRING", {"default": "LongVideo/report", "tooltip": (
                    "Where the plot (PNG) and the numbers (JSON) go in the output folder; may hold subfolders, "
                    "never '..'. Put it beside the video's, e.g. LongVideo/continuation_report.")}),
                "save": ("BOOLEAN", {"default": True, "tooltip": (
                    "Save the plot and the JSON and show the plot on this node; off: only the outputs (e.g. into a "
                    "Preview Image node).")}),
                "joins": JOINS_INPUT,
                "frames_per_batch": FRAMES_PER_BATCH,
            },
            "optional": {
                **SOURCE_INPUTS,
                "motion_size": ("INT", {"default": FLOW_SHORT_SIDE, "min": 16, "max": 2048, "step": 8, "tooltip": (
                    "The short side (pixels) the frames are scaled to for the optical flow: higher sees finer motion "
                    "and costs more; motion is still given in pixels of the video.")}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        if filename_prefix is None:
            return True
        try:
            check_output_prefix(output_directory(), filename_prefix, "png")
        except VideoOutputError as error:
            return str(error)
        return True

    def report(self, filename_prefix, save, joins, frames_per_batch, images=None, samples=None, vae=None,
               motion_size=FLOW_SHORT_SIDE):
        node = "LongVideoReport"
        check_numbers(self, locals())
        source = video_source(node, images, samples, vae, joins, frames_per_batch)
        if save:
            problem = self.VALIDATE_INPUTS(filename_prefix)
            if problem is not True:
                raise NodeInputError(f"{node}: {problem}")
        try:
            with Progress(source.frames, "report") as progress:
                figures = measure_frames(source.batches(), progress.update, motion_size)
        except ValueError as error:
            raise NodeInputError(f"{node}: {error}: fix the frames before this node (a diverged sampler or decoder "
                                 "makes NaN frames)") from None
        result = summarise(figures, source.joins, source.keyframes, source.joins_from)
        plot = draw_report(result)
        text = json.dumps(result)
        outputs = (torch.from_numpy(plot.astype(np.float32) / 255.0).unsqueeze(0).to(intermediate_device()), text)
        if not save:
            return outputs
        saved = _save_report(plot, text, filename_prefix)
        return {"ui": {"images": [saved]}, "result": outputs}


def _save_report(plot: np.ndarray, text: str, prefix: str) -> dict:
    """The plot as <prefix>_NNNNN.png and the numbers as <prefix>_NNNNN.json, each complete or absent; the PNG's
    entry for ComfyUI's preview."""
    import cv2

    ok, png = cv2.imencode(".png", cv2.cvtColor(plot, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("LongVideoReport: OpenCV could not encode the plot as PNG")
    with reserve_output_path(output_directory(), prefix, "png") as reservation:
        reservation.write_bytes(png.tobytes())
        reservation.commit()
    with reserve_output_path(output_directory(), prefix, "json") as numbers:
        numbers.write_bytes(text.encode("utf-8"))
        numbers.commit()
    return {"filename": reservation.filename, "subfolder": reservation.subfolder, "type": "output"}


class LongVideoColourMatch:
    DESCRIPTION = (
        "Corrects the colours of each chunk of a long video towards a reference: the first chunk (drift over the whole "
        "video goes) or the frames carried over into it (the step at each join goes). Lab mean and spread, histogram "
        "matching, or the linear MKL transfer; two passes over the frames, a batch at a time; where the correction "
        "itself would make a step at a join, it is eased in over a few frames."
    )
    CATEGORY = VIDEO
    FUNCTION = "match"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The corrected frames (IMAGE), as many as came in.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "method": (list(colour_match.METHODS), {"default": "lab", "tooltip": (
                    "lab: each CIELAB channel's mean and spread (the steadiest in docs/report.md's measurements). mkl: "
                    "the linear Monge-Kantorovich transfer in RGB (mean and covariance, what colour-match users know as "
                    "MKL). histogram: each CIELAB channel's histogram (follows uneven shifts; can flicker on small "
                    "differences).")}),
                "reference": (list(colour_match.REFERENCES), {"default": "first_chunk", "tooltip": (
                    "first_chunk: every chunk takes the first chunk's colours (removes drift over the video). "
                    "carried_frames: each chunk's first frames take the colours of the frames just before its join, as "
                    "corrected (removes the step at each join; slow drift inside chunks stays).")}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                       "tooltip": "How much of the correction is applied: 0 none, 1 all."}),
                "ease_frames": ("INT", {"default": 6, "min": 0, "max": 240, "tooltip": (
                    "Frames over which a step the correction itself makes at a join is eased in (0: none).")}),
                "joins": JOINS_INPUT,
                "frames_per_batch": FRAMES_PER_BATCH,
            },
            "optional": dict(SOURCE_INPUTS),
        }

    def match(self, method, reference, strength, ease_frames, joins, frames_per_batch, images=None, samples=None, vae=None):
        node = "LongVideoColourMatch"
        check_numbers(self, locals())
        settings = colour_match.MatchSettings(method, reference, strength, ease_frames)
        try:
            settings.check()
        except ValueError as error:
            raise NodeInputError(f"{node}: {error}") from None
        source = video_source(node, images, samples, vae, joins, frames_per_batch)
        if not source.joins:
            raise NodeInputError(f"{node}: the video has no joins to match across: connect the sampler's LATENT to "
                                 "'samples', or type them into 'joins' (e.g. 'every 16')")
        shape = (source.frames, *source.size, 3)
        _check_host_memory(shape, node)
        out = torch.empty(shape, dtype=torch.float32)
        with Progress(3 * source.frames, "colour match") as progress:
            written = 0
            for batch in source.batches():
                batch = batch.detach().float().cpu()
                if not torch.isfinite(batch).all():  # decoded by a VAE that failed
                    raise NodeInputError(f"{node}: the VAE decoded NaN or infinite values in frames {written} to "
                                         f"{written + len(batch) - 1}: decode with another VAE or in float32")
                out[written : written + len(batch)] = batch.clamp(0, 1)
                written += len(batch)
                progress.update(len(batch))
            colour_match.match_colours(out.numpy(), source.joins, settings, frames_per_batch=frames_per_batch,
                                       carried=source.carried, on_frames=progress.update)
        return (out.to(intermediate_device()),)
