import math
import os

import psutil
import torch

from ..utils.comfy import Progress, intermediate_device, output_directory
from ..utils.video_io import load_latent_file
from .common import (
    LATENT, LATENT_DOWNSCALE, LATENT_INFO, VAE, NodeInputError, check_frame_size, frame_size_input, video_latents,
)
from .common import graph_check
from .common import check_finite_frames, check_numbers

LATENT_CHANNELS = 4


class LongVideoEmptyLatent:
    DESCRIPTION = (
        "An empty video latent [batch, 4, frames, height/8, width/8] for UNet3D text-to-video models; with a vae "
        "connected, the latent that VAE makes (e.g. pixels [batch, 3, frames, height, width] for LongVideoVDPLoader)."
    )
    CATEGORY = LATENT
    FUNCTION = "generate"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("An empty video latent of this size, for a sampler's latent_image.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": frame_size_input("width"),
                "height": frame_size_input("height"),
                "frames": ("INT", {"default": 16, "min": 1, "max": 100000, "tooltip": (
                    "Number of frames; latent frames with a ComfyUI video VAE (Wan: 4 x (frames - 1) + 1 pixel "
                    "frames).")}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Videos sampled side by side."}),
            },
            "optional": {
                "vae": (VAE, {"tooltip": "Size the latent for this VAE's channels and downscale (needed for pixel-space "
                                         "models); without it: 4 channels at 1/8 size."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None):
        return graph_check(cls, locals(), lambda width, height: check_frame_size(cls.__name__, width, height))

    def generate(self, width, height, frames, batch_size, vae=None):
        check_numbers(self, locals())
        check_frame_size("LongVideoEmptyLatent", width, height, vae)
        if frames < 1:
            raise NodeInputError(f"LongVideoEmptyLatent: frames must be at least 1, got {frames}")
        if batch_size < 1:
            raise NodeInputError(f"LongVideoEmptyLatent: batch_size must be at least 1, got {batch_size}")
        channels, downscale = (LATENT_CHANNELS, LATENT_DOWNSCALE) if vae is None else (vae.latent_channels, vae.downscale)
        shape = (batch_size, channels, frames, height // downscale, width // downscale)
        _check_latent_memory(shape)
        return ({"samples": torch.zeros(shape, device=intermediate_device())},)


FRAMES_PER_BATCH = ("INT", {"default": 16, "min": 1, "max": 4096, "tooltip": "Frames through the VAE at once: lower it if the VAE runs out of memory."})


class LongVideoDecode:
    DESCRIPTION = (
        "Decodes a video latent to IMAGE frames, batch by batch. For long videos prefer LongVideoSaveVideo with "
        "the latent and VAE: it writes while decoding, so the full-length IMAGE never exists."
    )
    CATEGORY = LATENT
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The frames as an IMAGE [frames, height, width, 3] in 0..1, batches one after another.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (VAE, {"tooltip": "The VAE from LongVideoModelLoader."}),
                "samples": ("LATENT", {"tooltip": "A video latent [batch, channels, frames, height, width]."}),
                "frames_per_batch": FRAMES_PER_BATCH,
            }
        }

    def decode(self, vae, samples, frames_per_batch):
        check_numbers(self, locals())
        _check_frames_per_batch("LongVideoDecode", frames_per_batch)
        latents = video_latents(samples, "LongVideoDecode", "samples", vae.latent_channels)
        batch, _, frames, height, width = latents.shape
        total = batch * pixel_frames(vae, frames)
        shape = (total, height * vae.downscale, width * vae.downscale, 3)
        _check_host_memory(shape, "LongVideoDecode")
        images = torch.empty(shape, dtype=torch.float32, device=intermediate_device())
        written = 0
        with Progress(total, "decode") as progress:
            for pixels in vae.decode_batches(latents, frames_per_batch):
                images[written : written + len(pixels)] = pixels
                written += len(pixels)
                progress.update(len(pixels))
        return (images,)


class LongVideoEncode:
    DESCRIPTION = "Encodes IMAGE frames into a video latent [1, channels, frames, height/8, width/8]."
    CATEGORY = LATENT
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The frames as a video latent [1, channels, frames, height/8, width/8].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (VAE, {"tooltip": "The VAE from LongVideoModelLoader."}),
                "pixels": ("IMAGE", {"tooltip": "Frames [frames, height, width, 3]; height and width multiples of 8."}),
                "frames_per_batch": FRAMES_PER_BATCH,
            }
        }

    def encode(self, vae, pixels, frames_per_batch):
        check_numbers(self, locals())
        if pixels.dim() != 4 or pixels.shape[-1] < 3:
            raise NodeInputError(f"LongVideoEncode: 'pixels' must be an IMAGE [frames, height, width, 3], got {tuple(pixels.shape)}")
        if pixels.shape[0] == 0:
            raise NodeInputError("LongVideoEncode: 'pixels' holds 0 frames: connect an IMAGE with at least one frame")
        check_finite_frames("LongVideoEncode", "pixels", pixels, frame_dim=0)
        _check_frames_per_batch("LongVideoEncode", frames_per_batch)
        layout = getattr(vae, "layout", None)
        if layout is not None:
            try:
                layout.latent_frames(pixels.shape[0])
            except ValueError as error:
                raise NodeInputError(f"LongVideoEncode: 'pixels': {error} (the VAE would drop the frames after the "
                                     "last whole latent frame)") from None
        height, width = pixels.shape[1:3]
        if height % vae.downscale or width % vae.downscale:
            raise NodeInputError(
                f"LongVideoEncode: the frames are {width}x{height}; width and height must be multiples of {vae.downscale}: "
                "resize or crop them first (e.g. with ImageScale)"
            )
        return ({"samples": vae.encode(pixels, frames_per_batch).to(intermediate_device())},)


class LongVideoLoadLatent:
    DESCRIPTION = (
        "Loads a .latent file by path (typed, so it can be set headless with --set): the partial an interrupted "
        "sampler kept, or any latent saved by ComfyUI or this pack. Unlike ComfyUI's Load Latent it keeps the pack's "
        "facts saved with it: where the chunks join, and how to resume an interrupted continuation."
    )
    CATEGORY = LATENT
    FUNCTION = "load"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The video latent with its saved facts: into a sampler's start_latent to carry it on.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "path": ("STRING", {"default": "LongVideo/continuation_partial_00001.latent", "tooltip": (
                    "A .latent file: relative to the output folder (where interrupted runs keep theirs, e.g. "
                    "LongVideo/continuation_partial_00001.latent) or an absolute path.")}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, path):
        try:
            _latent_path(path)
        except NodeInputError as error:
            return str(error)
        return True

    @classmethod
    def IS_CHANGED(cls, path):
        try:
            found = _latent_path(path)
        except NodeInputError:
            return path
        return f"{found}:{os.path.getmtime(found)}:{os.path.getsize(found)}"

    def load(self, path):
        node = "LongVideoLoadLatent"
        found = _latent_path(path)
        try:
            samples, info = load_latent_file(found)
        except Exception as error:  # safetensors' own errors: not a .latent, truncated, ...
            raise NodeInputError(f"{node}: {found} is not a readable .latent file ({error}): choose another file") from None
        latent = {"samples": samples.to(intermediate_device())}
        if info:
            latent[LATENT_INFO] = info
        video_latents(latent, node, "path")
        return (latent,)


def _latent_path(path) -> str:
    if not isinstance(path, str) or not path.strip():
        raise NodeInputError("LongVideoLoadLatent: 'path' is empty: give a .latent file (e.g. "
                             "LongVideo/continuation_partial_00001.latent, relative to the output folder)")
    path = path.strip()
    candidates = [path] if os.path.isabs(path) else [os.path.join(output_directory(), path), os.path.abspath(path)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            if not candidate.endswith(".latent"):
                raise NodeInputError(f"LongVideoLoadLatent: 'path' {candidate} is not a .latent file: give the .latent a "
                                     "sampler or Save Latent wrote")
            return candidate
    raise NodeInputError(f"LongVideoLoadLatent: 'path' {path!r} was not found (looked in {' and '.join(candidates)}): "
                         "give a path relative to the output folder or an absolute one")


def pixel_frames(vae, latent_frames: int) -> int:
    """Pixel frames `vae` decodes `latent_frames` latent frames to (a causal video VAE: 4 x (latent frames - 1) + 1)."""
    return vae.pixel_frames(latent_frames) if hasattr(vae, "pixel_frames") else latent_frames


def _check_frames_per_batch(node: str, frames_per_batch: int) -> None:
    if frames_per_batch < 1:
        raise NodeInputError(f"{node}: frames_per_batch is {frames_per_batch}: give at least 1")


def _check_latent_memory(shape) -> None:
    needed = 4 * math.prod(shape)
    available = psutil.virtual_memory().available
    if needed > available * 0.5:
        raise NodeInputError(
            f"LongVideoEmptyLatent: {shape[0]} x {shape[2]} frames of latents {list(shape)} need {needed / 2**30:.1f} GiB but "
            f"only {available / 2**30:.1f} GiB of memory is free: lower frames, batch_size, width or height"
        )


def _check_host_memory(shape, node: str) -> None:
    needed = 4 * math.prod(shape)
    available = psutil.virtual_memory().available
    if needed > available * 0.9:
        raise NodeInputError(
            f"{node}: {shape[0]} frames of {shape[2]}x{shape[1]} need {needed / 2**30:.1f} GiB as an IMAGE but only "
            f"{available / 2**30:.1f} GiB of memory is free: connect the LATENT and VAE to LongVideoSaveVideo instead, "
            "which writes the video while decoding"
        )
