"""What every node shares: type names, the menu category, and turning ComfyUI values into plain tensors."""

import hashlib
import math
import numbers
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch

from ..utils.comfy import output_directory
from ..utils.video_io import PartialSaveError, reserve_output_path, save_latent_file

CATEGORY = "LongVideo"
# Menu categories by stage, as ComfyUI core files its nodes (loaders, conditioning, sampling, latent, video).
LOADERS = f"{CATEGORY}/loaders"
CONDITIONING = f"{CATEGORY}/conditioning"
SAMPLING = f"{CATEGORY}/sampling"
MODEL_PATCHES = f"{CATEGORY}/model_patches"
LATENT = f"{CATEGORY}/latent"
VIDEO = f"{CATEGORY}/video"
# The embedded default model (checkpoints/longvideo-shapes) makes 64x64 frames; fresh nodes start at its size.
DEFAULT_FRAME_SIZE = 64
MODEL = "LV_MODEL"
CLIP = "LV_CLIP"
VAE = "LV_VAE"


LATENT_DOWNSCALE = 8


class NodeInputError(ValueError):
    """A node input that cannot be used; the message names the node, the input and what to change."""


def check_numbers(node, values: dict) -> None:
    """Refuse NaN, infinity and non-numbers given to `node`'s FLOAT and INT inputs, naming the input.

    Call it first thing in a node's FUNCTION as `check_numbers(self, locals())`: ComfyUI checks typed-in widget
    values, but a linked value (from a math or primitive node) or a headless call arrives unchecked.
    """
    cls = node if isinstance(node, type) else type(node)
    types = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, entry in (types.get(section) or {}).items():
            kind = entry[0] if isinstance(entry, (tuple, list)) and entry else entry
            value = values.get(name)
            if kind not in ("FLOAT", "INT") or value is None:
                continue
            number = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if number and math.isfinite(value) and (kind == "FLOAT" or value == int(value)):
                continue
            options = entry[1] if isinstance(entry, (tuple, list)) and len(entry) > 1 and isinstance(entry[1], dict) else {}
            low, high = options.get("min"), options.get("max")
            span = f" from {low} to {high}" if low is not None and high is not None else ""
            wanted = "a whole number" if kind == "INT" else "a finite number"
            raise NodeInputError(f"{cls.__name__}: '{name}' is {value!r}: give {wanted}{span}")


def frame_size_input(name: str):
    """The widget of a frame `name` ("width" or "height") in pixels."""
    return ("INT", {"default": DEFAULT_FRAME_SIZE, "min": LATENT_DOWNSCALE, "max": 4096, "step": LATENT_DOWNSCALE,
                    "tooltip": f"Frame {name} in pixels; a multiple of the model's VAE compression: "
                               f"{LATENT_DOWNSCALE} for most models, 16 for Wan 2.2 TI2V 5B, 32 for LTX-Video."})


# The one combo value a loader shows when it finds no model: short, so the combo never shows a sentence.
NOTHING_FOUND = "none"


def validate_model_choice(node: str, listed: str, typed, find, where: str, path_input: str) -> bool | str:
    """A loader's VALIDATE_INPUTS: True, or the reason the model cannot be found.

    ComfyUI skips its own "Value not in list" check for inputs VALIDATE_INPUTS takes, so a path typed in
    `path_input` is used whatever the combo holds (the placeholder, or a file of another machine). A linked path
    input (or an absent one) arrives as None here and is checked when the node runs.
    """
    if typed is None or str(typed).strip():
        return True
    if listed == NOTHING_FOUND:
        return f"{node}: no model was found in {where}: put one there, or type its full path in {path_input}"
    if find(listed) is None:
        return f"{node}: '{listed}' was not found in {where}: pick a listed one, or type its full path in {path_input}"
    return True


def graph_check(cls, values: dict, check: Callable[..., None]) -> bool | str:
    """A VALIDATE_INPUTS: what can be checked from the graph alone, before anything runs (ComfyUI and run_workflow.py
    both call it first), as one line. `values` are the typed-in inputs the method names, None for linked ones, which
    `check` (raising NodeInputError) skips. ComfyUI leaves the inputs VALIDATE_INPUTS names to it, so their number and
    range are checked here first."""
    types = cls.INPUT_TYPES()
    entries = {**(types.get("required") or {}), **(types.get("optional") or {})}
    given = {name: value for name, value in values.items() if name in entries}
    try:
        check_numbers(cls, given)
        for name, value in given.items():
            options = entries[name][1] if len(entries[name]) > 1 else {}
            low, high = options.get("min"), options.get("max")
            if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
                raise NodeInputError(f"{cls.__name__}: '{name}' is {value}: give a value from {low} to {high}")
        check(**given)
    except NodeInputError as error:
        return str(error)
    return True


def check_overlap(node: str, frames_per_window, overlap) -> None:
    if frames_per_window is not None and overlap is not None and not 0 <= overlap < frames_per_window:
        raise NodeInputError(f"{node}: overlap {overlap} must be at least 0 and below frames_per_window "
                             f"({frames_per_window}): use at most {frames_per_window - 1}")


def check_frame_size(node: str, width: int, height: int, model=None) -> None:
    """Refuse a frame size the latents of `model` (a Denoiser or VAE: its `downscale`) cannot hold exactly: a multiple
    of its VAE's compression (16 for Wan 2.2 TI2V 5B, 32 for LTX-Video) and of 8 at least, as for every model before
    (pixel-space models, downscale 1, check their own UNet's multiple when they run)."""
    downscale = latent_downscale(model) if model is not None else LATENT_DOWNSCALE
    multiple = max(downscale, LATENT_DOWNSCALE)
    why = f" (this model's VAE compresses {downscale}x)" if downscale > LATENT_DOWNSCALE else ""
    for name, value in (("width", width), ("height", height)):
        if value is not None and (value < multiple or value % multiple):
            lower = max(multiple, value // multiple * multiple)
            raise NodeInputError(f"{node}: {name} {value} is not a multiple of {multiple}{why}: "
                                 f"use {lower} or {lower + multiple}")


def refuse_comfy_model(node: str, model, instead: str) -> None:
    """Refuse a ComfyUI model (LongVideoComfyModel's, sampled by ComfyUI's own sampling) in a node that cannot drive
    it, before anything is loaded or sampled; `instead` says why and what to use."""
    if getattr(model, "samples_itself", False):
        name = model_class_name(model)
        raise NodeInputError(f"{node}: 'model' is ComfyUI's {name} (from LongVideoComfyModel): {instead}")


def model_class_name(model) -> str:
    """A model's class for errors: ComfyUI's model class for a ComfyUI model (WAN21, WAN22, LTXV, HunyuanVideo, ...),
    the wrapper's class for the pack's own."""
    network = getattr(getattr(model, "patcher", None), "model", None)
    return type(network).__name__ if network is not None else type(model).__name__


def latent_downscale(model) -> int:
    """Pixels per latent pixel of `model` (a Denoiser's `downscale`): 8 for VAE latents, 1 for pixel-space models."""
    return getattr(model, "downscale", LATENT_DOWNSCALE)


def latent_frame_size(model, width: int, height: int) -> tuple[int, int]:
    """(height, width) of `model`'s latents for frames of width x height pixels."""
    downscale = latent_downscale(model)
    return height // downscale, width // downscale


def conditioning_embeddings(conditioning, node: str, name: str, width: int) -> torch.Tensor:
    """The token embeddings [batch, tokens, width] (float32) of a ComfyUI CONDITIONING list."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise NodeInputError(f"{node}: '{name}' is not a CONDITIONING: connect LongVideoTextEncode or CLIPTextEncode")
    if len(conditioning) > 1:
        raise NodeInputError(
            f"{node}: '{name}' holds {len(conditioning)} conditionings; this sampler takes one: "
            "use ConditioningConcat instead of ConditioningCombine"
        )
    embeddings = conditioning[0][0]
    if embeddings.dim() != 3 or embeddings.shape[-1] != width:
        raise NodeInputError(
            f"{node}: '{name}' has embeddings of shape {tuple(embeddings.shape)} but the model expects width {width}: "
            "encode the prompt with this model's text encoder (LongVideoTextEncode; for video-diffusion-pytorch "
            "models LongVideoVDPCondition)"
        )
    return embeddings.float()


def conditioning_prompt(conditioning, node: str, name: str, model):
    """A ComfyUI CONDITIONING as the samplers' Prompt: its token embeddings (checked as conditioning_embeddings does)
    and, for a model that samples with ComfyUI's whole conditioning (ComfyDenoiser), the list itself, extras and all."""
    from ..sampling.denoise import Prompt

    tokens = conditioning_embeddings(conditioning, node, name, model.context_width)
    native = getattr(model, "native_conditioning", None)
    if native is None:
        return Prompt(tokens)
    try:
        return Prompt(tokens, native(conditioning, f"{node}: '{name}'"))
    except ValueError as error:
        raise NodeInputError(str(error)) from None


def video_latents(latent, node: str, name: str = "latent", channels: int | None = None) -> torch.Tensor:
    """The samples [B, C, T, H, W] of a ComfyUI LATENT, checked."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.dim() != 5:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise NodeInputError(
            f"{node}: '{name}' must be a video LATENT with samples [batch, channels, frames, height, width], got {shape}: "
            "make it with LongVideoEmptyLatent or LongVideoEncode"
        )
    if channels is not None and samples.shape[1] != channels:
        raise NodeInputError(
            f"{node}: '{name}' has {samples.shape[1]} channels but the model works on {channels}: "
            "make the latent for this model (LongVideoEmptyLatent with its vae connected, or LongVideoEncode with its VAE)"
        )
    check_finite_frames(node, name, samples, frame_dim=2)
    return samples


# Latent and pixel values beyond this are no video's: a .latent of 1e30 gives NaN at the first model call.
LARGEST_VALUE = 1e4


def check_finite_frames(node: str, name: str, frames: torch.Tensor, frame_dim: int) -> None:
    """Refuse NaN, infinite or absurdly large values where latents or pixels enter a node, naming the frames."""
    bad = ~torch.isfinite(frames) | (frames.abs() > LARGEST_VALUE)
    if not bad.any():
        return
    per_frame = bad.movedim(frame_dim, 0).reshape(frames.shape[frame_dim], -1).any(dim=1)
    which = per_frame.nonzero().flatten().tolist()
    shown = ", ".join(map(str, which[:8])) + (f" and {len(which) - 8} more" if len(which) > 8 else "")
    raise NodeInputError(f"{node}: '{name}' holds NaN, infinite or out-of-range values (beyond {LARGEST_VALUE:g}) in "
                         f"frame{'s' if len(which) > 1 else ''} {shown} of {frames.shape[frame_dim]}: fix or cut the node "
                         "that made them (a broken .latent file, a NaN upstream)")


# The key of a LATENT's pack-specific facts (a dict: where its joins are, how to resume it), kept in saved .latent files.
LATENT_INFO = "longvideo"


def save_partial_latent(latents: torch.Tensor, prefix: str, info: dict | None = None) -> str | None:
    """Write finished frames in ComfyUI's .latent format under the output folder (LoadLatent reads it, and the long
    samplers take it back as start_latent); the file appears complete or not at all, under a number no other run
    takes. Returns its path (None for no frames: no empty file is written); raises PartialSaveError naming the file
    and saying the frames are lost if it cannot be written (disk full, folder not writable)."""
    frames = latents.shape[2] if latents.dim() == 5 else len(latents)
    if frames == 0 or latents.numel() == 0:
        return None  # nothing was finished: no empty file
    target = f"{output_directory()}/{prefix}_NNNNN.latent"
    try:
        reservation = reserve_output_path(output_directory(), prefix, "latent")
        target = reservation.path
        return save_latent_file(latents, reservation, info)
    except (OSError, ValueError) as error:
        cause = error.__cause__ if isinstance(error, PartialSaveError) and error.__cause__ is not None else error
        reason = (cause.strerror if isinstance(cause, OSError) else None) or str(cause)
        raise PartialSaveError(f"could not save the {frames} finished frames to {target} ({reason}); they are lost: "
                               "free disk space or fix the output folder before the next run") from error


def model_fingerprint(model) -> str:
    """A short identity of the weights `model` runs (its networks' classes, sizes, a sample of their values and the
    count of ComfyUI patches such as LoRAs), kept in a partial so that it is not resumed on another model. Cheap: it
    reads 64 values of every eighth tensor."""
    digest = hashlib.sha256()
    for network, patches in _networks(model):
        state = network.state_dict()
        names = sorted(state)
        digest.update(f"{type(network).__name__}:{len(names)}:{sum(t.numel() for t in state.values())}:{patches}".encode())
        for name in names[:: max(1, len(names) // 8)]:
            tensor = state[name]
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            # Values of plain tensors only: a quantised tensor subclass (GGUF) or one not in memory is known by its shape.
            if type(tensor) in (torch.Tensor, torch.nn.Parameter) and tensor.device.type != "meta":
                digest.update(tensor.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _networks(value, seen=None, depth=0):
    """(torch module, patch count) of every network a model object holds: the pack's denoisers and their wrappers,
    ComfyUI's ModelPatchers (a Wan 2.2 A14B's two experts)."""
    seen = set() if seen is None else seen
    if id(value) in seen or depth > 4:
        return
    seen.add(id(value))
    if isinstance(value, torch.nn.Module):
        yield value, 0
        return
    if isinstance(getattr(value, "model_options", None), dict) and isinstance(getattr(value, "model", None), torch.nn.Module):
        if id(value.model) not in seen:
            seen.add(id(value.model))
            yield value.model, len(getattr(value, "patches", None) or {})
        return
    for name, attribute in sorted(vars(value).items()) if hasattr(value, "__dict__") else ():
        if isinstance(attribute, torch.nn.Module) or type(attribute).__module__.startswith((__package__.rpartition(".")[0], "comfy")):
            yield from _networks(attribute, seen, depth + 1)


class MadeOnDemand(Sequence):
    """A sequence of `length` items where item i is `make(i)`, made when first asked for and kept among the few most
    recent: a 10,000-line prompt schedule of a 3-chunk continuation encodes 3 lines."""

    def __init__(self, length: int, make: Callable[[int], object], keep: int = 4):
        self.length, self.make, self.keep = length, make, keep
        self.made = OrderedDict()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.length))]
        index = range(self.length)[index]
        if index in self.made:
            self.made.move_to_end(index)
        else:
            self.made[index] = self.make(index)
            while len(self.made) > self.keep:
                self.made.popitem(last=False)
        return self.made[index]


def check_fits(node: str, model, *, batch: int, call_frames: int, kept_frames: int, copies: int, height: int, width: int,
               change: str) -> None:
    """Refuse, before anything is allocated, a run that cannot fit: `copies` float32 copies of `kept_frames` latent
    frames held on the host, and one model call on `call_frames` of them (models/denoiser.call_bytes, a lower bound)
    on the compute device. `height` and `width` are the latents'; `change` says which inputs to lower."""
    import psutil

    from ..models.denoiser import call_bytes
    from ..utils.comfy import compute_device

    free = psutil.virtual_memory().available
    size = f"{width * latent_downscale(model)}x{height * latent_downscale(model)}"
    kept = 4 * copies * batch * model.latent_channels * kept_frames * height * width
    if kept > 0.5 * free:
        raise NodeInputError(f"{node}: {kept_frames} latent frames of {size} need {kept / 2**30:.1f} GiB while sampling but "
                             f"only {free / 2**30:.1f} GiB of memory is free: {change}")
    needed = call_bytes(model, batch, call_frames, height, width)
    if needed is None:
        return
    device = compute_device()
    if device.type == "cuda":
        room, where = torch.cuda.get_device_properties(device).total_memory, f"{device} has"
    else:
        room, where = free, "only this much memory is free:"
    if needed > room:
        raise NodeInputError(f"{node}: one model call on {call_frames} frames of {size} needs at least "
                             f"{needed / 2**30:.1f} GiB but {where} {room / 2**30:.1f} GiB: {change}")


def partial_prefix(prompt, unique_id, default: str) -> str:
    """Where a sampler in a ComfyUI graph keeps its finished work when stopped: "<prefix>_partial" after the
    filename_prefix of the save node it feeds (a Save node first, then any node with a prefix such as a report;
    `prompt` and `unique_id` are the hidden PROMPT and UNIQUE_ID), else `default`."""
    if not isinstance(prompt, dict) or unique_id is None:
        return default
    frontier, reached = [str(unique_id)], []
    while frontier:
        source = frontier.pop(0)
        for node_id, node in prompt.items():
            inputs = node.get("inputs") if isinstance(node, dict) else None
            if node_id in reached or not isinstance(inputs, dict):
                continue
            if any(isinstance(v, list) and len(v) == 2 and str(v[0]) == source for v in inputs.values()):
                reached.append(node_id)
                frontier.append(node_id)
    named = [(str(prompt[n].get("class_type", "")), prompt[n]["inputs"].get("filename_prefix")) for n in reached]
    named = [(kind, prefix.strip()) for kind, prefix in named if isinstance(prefix, str) and prefix.strip()]
    for kind, prefix in sorted(named, key=lambda entry: "Save" not in entry[0]):
        return f"{prefix}_partial"
    return default


DEVICES = ("STRING", {"default": "", "tooltip": (
    "Split the video over these devices, one worker process each (torch.distributed: NCCL on GPUs, gloo on the CPU): "
    "'cuda:0, cuda:1' (or '0, 1'), 'all' (every GPU here), 'cpu, cpu'. Empty: this process, on one device. The "
    "video is the one made on one device (up to float rounding). A rank that dies or stops answering ends the run "
    "naming it; finished work is kept as a .latent.")})


def split_devices(node: str, devices: str):
    """The devices of a DEVICES input (sampling.distributed_launch.resolve_devices), or None: this process."""
    from ..sampling.distributed_launch import resolve_devices

    try:
        return resolve_devices(devices)
    except ValueError as error:
        raise NodeInputError(f"{node}: 'devices': {error}") from None


def ranks_model(node: str, model):
    """`model` as the worker ranks rebuild it (models/rank_models.py), or a NodeInputError saying why it cannot go."""
    from ..models.rank_models import rank_model

    try:
        return rank_model(model)
    except ValueError as error:
        raise NodeInputError(f"{node}: 'model' on several devices: {error}") from None
