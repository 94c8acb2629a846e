import json
import logging

from ..utils.comfy import Progress, output_directory
from ..utils.video_io import VIDEO_FORMATS, VideoOutputError, check_fps, check_output_prefix, reserve_output_path, write_video
from .common import VIDEO, VAE, NodeInputError, check_finite_frames, check_numbers, save_partial_latent, video_latents
from .latents import FRAMES_PER_BATCH, pixel_frames

UNSAVED_PREFIX = "LongVideo/unsaved"
FPS_RANGE = (0.1, 240.0)
log = logging.getLogger(__name__)


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
                "fps": ("FLOAT", {"default": 8.0, "min": FPS_RANGE[0], "max": FPS_RANGE[1], "step": 0.5, "tooltip": "Frames per second."}),
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

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None, fps=None, format=None):
        """Run by ComfyUI (and run_workflow.py) before anything in the graph runs, so a save that cannot work fails
        before sampling, not after. Linked inputs arrive as None and are checked when the node runs."""
        problem = save_settings_problem(filename_prefix, fps, format)
        return True if problem is None else problem

    def save(self, filename_prefix, fps, format, crf, images=None, samples=None, vae=None, frames_per_batch=16,
             prompt=None, extra_pnginfo=None):
        node = "LongVideoSaveVideo"
        check_numbers(self, locals())
        problem = save_settings_problem(filename_prefix, fps, format)
        if problem is not None:
            raise NodeInputError(f"{node}: {problem}")
        if frames_per_batch < 1:
            raise NodeInputError(f"{node}: frames_per_batch is {frames_per_batch}: give at least 1")
        if (images is None) == (samples is None):
            raise NodeInputError(f"{node}: connect either 'images' or 'samples' (with 'vae'), not {'both' if images is not None else 'neither'}")
        if samples is not None:
            if vae is None:
                raise NodeInputError(f"{node}: 'samples' needs 'vae' to decode them: connect the VAE from LongVideoModelLoader")
            latents = video_latents(samples, node, "samples", vae.latent_channels)
            if latents.shape[2] == 0 or latents.shape[0] == 0:
                raise NodeInputError(f"{node}: 'samples' holds no frames ({tuple(latents.shape)}): nothing to save")
            total = latents.shape[0] * pixel_frames(vae, latents.shape[2])
            batches = vae.decode_batches(latents, frames_per_batch)
        else:
            if images.dim() != 4 or images.shape[0] < 1:
                raise NodeInputError(f"{node}: 'images' must be an IMAGE [frames, height, width, 3], got {tuple(images.shape)}")
            check_finite_frames(node, "images", images, frame_dim=0)
            total = images.shape[0]
            batches = (images[start : start + frames_per_batch] for start in range(0, total, frames_per_batch))

        try:
            with reserve_output_path(output_directory(), filename_prefix, format) as reservation, \
                    Progress(total, "writing video") as progress:
                info = write_video(_counted(batches, progress), reservation, fps, format, crf, _metadata(prompt, extra_pnginfo))
        except BaseException as error:
            if samples is not None:
                _keep_latents(latents, error)
            raise
        result = {"filename": reservation.filename, "subfolder": reservation.subfolder, "type": "output", "format": format,
                  "frames": info["frames"]}
        return {"ui": {"images": [result], "animated": (True,)}, "result": ()}


def save_settings_problem(filename_prefix, fps, format) -> str | None:
    """What is wrong with these save settings (None: nothing); None values (linked inputs) are not checked."""
    if format is not None and format not in VIDEO_FORMATS:
        return f"format {format!r} is not one of {', '.join(VIDEO_FORMATS)}"
    try:
        if fps is not None:
            if isinstance(fps, (int, float)) and not isinstance(fps, bool) and not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
                return f"fps {fps!r} is out of range: give {FPS_RANGE[0]:g} to {FPS_RANGE[1]:g}"
            check_fps(fps, format or "mp4")
        if filename_prefix is not None:
            check_output_prefix(output_directory(), filename_prefix, format or "mp4")
    except VideoOutputError as error:
        return str(error)
    return None


def _keep_latents(latents, error: BaseException) -> None:
    """The video could not be written: keep what was sampled as a .latent and say where in the error."""
    try:
        path = save_partial_latent(latents, UNSAVED_PREFIX)
    except OSError as failure:
        error.add_note(f"LongVideoSaveVideo: the latents could not be kept either: {failure}")
        return
    message = (f"LongVideoSaveVideo: the video was not written; its {latents.shape[2]} frames of latents are kept in {path}: "
               "load them with Load Latent and connect them to 'samples' to save again")
    error.add_note(message)
    log.warning(message)


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
