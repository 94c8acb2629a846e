import json

from ..utils.comfy import Progress, output_directory
from ..utils.video_io import VIDEO_FORMATS, resolve_output_path, write_video
from .common import VIDEO, VAE, NodeInputError, video_latents
from .latents import FRAMES_PER_BATCH


class LongVideoSaveVideo:
    DESCRIPTION = (
        "Writes an MP4 (H.264), WebM (VP9) or GIF into the output folder. Give it IMAGE frames, or a LATENT and the "
        "VAE: then it decodes batch by batch while writing, so a long video never has to fit in memory as images."
    )
    CATEGORY = VIDEO
    FUNCTION = "save"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "filename_prefix": ("STRING", {"default": "LongVideo/video",
                                               "tooltip": "File name start inside the output folder; may hold subfolders, never '..'."}),
                "fps": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 240.0, "step": 0.5, "tooltip": "Frames per second."}),
                "format": (list(VIDEO_FORMATS), {"default": "mp4", "tooltip": "mp4: H.264; webm: VP9; gif: animated GIF."}),
                "crf": ("INT", {"default": 19, "min": 0, "max": 63,
                                "tooltip": "Quality for mp4/webm: lower is better and larger (mp4 uses 0..51)."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Frames to write. Leave empty when giving samples + vae."}),
                "samples": ("LATENT", {"tooltip": "A video latent to decode while writing (needs vae)."}),
                "vae": (VAE, {"tooltip": "The VAE that decodes samples."}),
                "frames_per_batch": FRAMES_PER_BATCH,
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, filename_prefix, fps, format, crf, images=None, samples=None, vae=None, frames_per_batch=16,
             prompt=None, extra_pnginfo=None):
        node = "LongVideoSaveVideo"
        if (images is None) == (samples is None):
            raise NodeInputError(f"{node}: connect either 'images' or 'samples' (with 'vae'), not {'both' if images is not None else 'neither'}")
        if samples is not None:
            if vae is None:
                raise NodeInputError(f"{node}: 'samples' needs 'vae' to decode them: connect the VAE from LongVideoModelLoader")
            latents = video_latents(samples, node, "samples", vae.latent_channels)
            total = latents.shape[0] * latents.shape[2]
            batches = vae.decode_batches(latents, frames_per_batch)
        else:
            if images.dim() != 4 or images.shape[0] < 1:
                raise NodeInputError(f"{node}: 'images' must be an IMAGE [frames, height, width, 3], got {tuple(images.shape)}")
            total = images.shape[0]
            batches = (images[start : start + frames_per_batch] for start in range(0, total, frames_per_batch))

        path, subfolder, filename = resolve_output_path(output_directory(), filename_prefix, format)
        with Progress(total, "writing video") as progress:
            info = write_video(_counted(batches, progress), path, fps, format, crf, _metadata(prompt, extra_pnginfo))
        result = {"filename": filename, "subfolder": subfolder, "type": "output", "format": format, "frames": info["frames"]}
        return {"ui": {"images": [result], "animated": (True,)}, "result": ()}


def _counted(batches, progress):
    for batch in batches:
        count = len(batch)
        yield batch
        del batch  # released before the next batch is decoded
        progress.update(count)


def _metadata(prompt, extra_pnginfo) -> dict[str, str]:
    metadata = {}
    if prompt is not None:
        metadata["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    return metadata
