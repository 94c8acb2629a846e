"""Known frames as a ComfyUI video model's own learned conditioning: frame conditioning 'learned' on ComfyUI's models.

The models users run were trained to take known frames in their own way: Wan's image-to-video, first-last-frame and
Fun InP models read VAE latents of the known pixel frames (grey elsewhere) and a mask beside their input; VACE reads a
control video and masks; Wan 2.2 TI2V 5B and LTX-Video keep clean latent frames at timestep 0 (LTX-Video also takes
keyframe guides appended to its latent); HunyuanVideo's image-to-video model reads a concatenated image latent. A
`HandOff` builds that conditioning for one clip with ComfyUI's own node functions (comfy_extras, looked up by name),
so the model receives what the user's own ComfyUI workflow would give it for those frames:

| model (ComfyUI class)                               | hand-off                     | known frames it takes       |
|-----------------------------------------------------|------------------------------|-----------------------------|
| Wan I2V / FLF2V / Fun InP / 2.2 A14B I2V (WAN21, +20 input channels) | WanImageToVideo, WanFirstLastFrameToVideo | at the clip's start and end |
| Wan VACE (WAN21_Vace)                               | WanVaceToVideo               | anywhere                    |
| Wan 2.2 TI2V 5B (WAN22)                             | Wan22ImageToVideoLatent      | at the start                |
| LTX-Video (LTXV)                                    | LTXVImgToVideo, LTXVAddGuide | anywhere                    |
| HunyuanVideo image-to-video (HunyuanVideoI2V)       | HunyuanImageToVideo (v1)     | at the start                |

The hand-off is in pixels: the known latent frames are decoded and the node encodes them as the model's image input,
as these models were trained. A known frame that is not the first latent frame of the video stands for `temporal`
pixel frames, but in the clip's first slot (the causal VAE's one-frame slot) a model reads one image: decoding and
re-encoding gives that slot the image latent the model was trained on, where handing over the latent itself would put a
four-frame latent in a one-frame slot (docs/comfyui_models.md, measured by bench/comfy_handoff.py). A run of known
frames at the clip's start is decoded after the video frames just before it where the strategy gives them
(KnownFrames.context, continuation), so its pixels are the video's own last frames; otherwise on its own.

Every `comfy` import is inside a function: this module is used only when a ComfyUI MODEL is connected.
"""

import importlib
from dataclasses import dataclass

import torch


@dataclass
class KnownPixels:
    """The pixel frames [n, H, W, 3] of one run of consecutive known latent frames, starting at pixel frame `start` of
    the clip (latent frame s > 0 ends at pixel frame temporal * s, which is where a decoded run starting there lands)."""

    start: int
    images: torch.Tensor


@dataclass
class RunInputs:
    """What one ComfyUI sampling run gets: conditioning, latent image, noise mask (None: sample every frame), and the
    clip's latent frames (LTX-Video's guides append latent frames after them, cropped from the result)."""

    positive: list
    negative: list | None
    latent: torch.Tensor
    noise_mask: torch.Tensor | None
    frames: int


def known_runs(indices) -> list[tuple[int, int]]:
    """The known latent frames as runs of consecutive frames, (start, stop) each."""
    runs: list[tuple[int, int]] = []
    for index in sorted(indices):
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


def comfy_node(module: str, name: str):
    """A ComfyUI node class by module and name; a ValueError says which is missing (another ComfyUI version)."""
    node = getattr(importlib.import_module(module), name, None)
    if node is None:
        raise ValueError(f"this ComfyUI has no {name} ({module}), which builds this model's own conditioning: update "
                         "ComfyUI, or choose frame conditioning 'replace'")
    return node


def run_node(node, function: str, **inputs) -> tuple:
    """Call a ComfyUI node's function with named inputs; its outputs as a tuple (V1 nodes and V3 io.ComfyNode alike)."""
    target = node if hasattr(node, "define_schema") else node()
    outputs = getattr(target, function)(**inputs)
    return tuple(outputs.args if hasattr(outputs, "args") else outputs)


def without_keys(conditioning: list, keys) -> list:
    """A CONDITIONING list without `keys` in its extras (the user's conditioning is not changed)."""
    return [[tokens, {key: value for key, value in extras.items() if key not in keys}] for tokens, extras in conditioning]


class HandOff:
    """How one model family takes known frames. `nodes` names the ComfyUI nodes used; `sets` the conditioning keys they
    set (the user's own values of these are dropped from a run the hand-off builds, e.g. WanImageToVideo's start image
    for a later continuation chunk); `where` says which known frames the model takes."""

    nodes = ""
    sets: tuple[str, ...] = ()
    where = "anywhere in a clip"
    needs_clip_vision = False

    def check(self, runs: list[tuple[int, int]], frames: int) -> None:
        """Raise ValueError when this model cannot take known latent frames `runs` of a `frames`-frame clip."""

    def build(self, vae, clip_vision, positive, negative, pixels: list[KnownPixels], frames: int, width: int,
              height: int, length: int) -> RunInputs:
        raise NotImplementedError

    def _check_start_only(self, runs, frames):
        if len(runs) != 1 or runs[0][0] != 0:
            self._refuse(runs, frames, "at the start of a clip only")

    def _refuse(self, runs, frames, allowed: str):
        known = ", ".join(f"{a}" if b == a + 1 else f"{a}-{b - 1}" for a, b in runs)
        raise ValueError(f"this model's own conditioning ({self.nodes}) takes known frames {allowed}; this clip knows "
                         f"latent frames {known} of {frames}")


class WanImage(HandOff):
    """Wan's image input channels (mask + image latents): the image-to-video, first-last-frame, Fun InP and Wan 2.2
    A14B image-to-video models; CLIP vision of the known frames where the model has an image embedding (Wan 2.1 I2V
    and FLF2V 14B)."""

    nodes = "WanImageToVideo / WanFirstLastFrameToVideo"
    sets = ("concat_latent_image", "concat_mask", "clip_vision_output")
    where = "at the start and the end of a clip"

    def __init__(self, needs_clip_vision: bool):
        self.needs_clip_vision = needs_clip_vision

    def check(self, runs, frames):
        if any(start > 0 and stop < frames for start, stop in runs):
            self._refuse(runs, frames, "at the start and at the end of a clip only")

    def build(self, vae, clip_vision, positive, negative, pixels, frames, width, height, length):
        start = next((p.images for p in pixels if p.start == 0), None)
        end = next((p.images for p in pixels if p.start > 0), None)
        common = {"positive": positive, "negative": negative, "vae": vae, "width": width, "height": height,
                  "length": length, "batch_size": 1, "start_image": start}
        if end is None:
            node = comfy_node("comfy_extras.nodes_wan", "WanImageToVideo")
            positive, negative, latent = run_node(node, "execute", **common,
                                                  clip_vision_output=_clip_vision(clip_vision, start, -1))
        else:
            node = comfy_node("comfy_extras.nodes_wan", "WanFirstLastFrameToVideo")
            positive, negative, latent = run_node(node, "execute", **common, end_image=end,
                                                  clip_vision_start_image=_clip_vision(clip_vision, start, -1),
                                                  clip_vision_end_image=_clip_vision(clip_vision, end, 0))
        return RunInputs(positive, negative, latent["samples"], latent.get("noise_mask"), frames)


class WanVace(HandOff):
    """VACE's control video (the known pixel frames, grey elsewhere) and masks (0 on known frames)."""

    nodes = "WanVaceToVideo"
    sets = ("vace_frames", "vace_mask", "vace_strength")

    def build(self, vae, clip_vision, positive, negative, pixels, frames, width, height, length):
        control = torch.full((length, height, width, 3), 0.5)
        masks = torch.ones(length, height, width)
        for part in pixels:
            control[part.start : part.start + len(part.images)] = part.images
            masks[part.start : part.start + len(part.images)] = 0.0
        node = comfy_node("comfy_extras.nodes_wan", "WanVaceToVideo")
        positive, negative, latent, _ = run_node(node, "execute", positive=positive, negative=negative, vae=vae,
                                                 width=width, height=height, length=length, batch_size=1, strength=1.0,
                                                 control_video=control, control_masks=masks)
        return RunInputs(positive, negative, latent["samples"], latent.get("noise_mask"), frames)


class Wan22Latent(HandOff):
    """Wan 2.2 TI2V 5B: the start frames' latents in the latent image, kept clean at timestep 0 by the noise mask."""

    nodes = "Wan22ImageToVideoLatent"
    where = "at the start of a clip"

    def check(self, runs, frames):
        self._check_start_only(runs, frames)

    def build(self, vae, clip_vision, positive, negative, pixels, frames, width, height, length):
        node = comfy_node("comfy_extras.nodes_wan", "Wan22ImageToVideoLatent")
        (latent,) = run_node(node, "execute", vae=vae, width=width, height=height, length=length, batch_size=1,
                             start_image=pixels[0].images)
        return RunInputs(positive, negative, latent["samples"], latent.get("noise_mask"), frames)


class LtxvGuides(HandOff):
    """LTX-Video: known frames at the clip's start go into its latent (LTXVImgToVideo: clean, timestep 0); every other
    run of known frames is a keyframe guide (LTXVAddGuide: latents appended with their frame positions)."""

    nodes = "LTXVImgToVideo / LTXVAddGuide"
    sets = ("keyframe_idxs",)

    def build(self, vae, clip_vision, positive, negative, pixels, frames, width, height, length):
        first = pixels[0] if pixels[0].start == 0 else None
        if first is not None:
            node = comfy_node("comfy_extras.nodes_lt", "LTXVImgToVideo")
            positive, negative, latent = run_node(node, "execute", positive=positive, negative=negative, image=first.images,
                                                  vae=vae, width=width, height=height, length=length, batch_size=1,
                                                  strength=1.0)
        else:
            node = comfy_node("comfy_extras.nodes_lt", "EmptyLTXVLatentVideo")
            (latent,) = run_node(node, "execute", width=width, height=height, length=length, batch_size=1)
        guide = comfy_node("comfy_extras.nodes_lt", "LTXVAddGuide")
        for part in pixels[1 if first is not None else 0 :]:
            positive, negative, latent = run_node(guide, "execute", positive=positive, negative=negative, vae=vae,
                                                  latent=latent, image=part.images, frame_idx=part.start, strength=1.0)
        return RunInputs(positive, negative, latent["samples"], latent.get("noise_mask"), frames)


class HunyuanImage(HandOff):
    """HunyuanVideo's image-to-video model (33 input channels): the start frames as its concatenated image latent."""

    nodes = "HunyuanImageToVideo (v1 concat)"
    sets = ("concat_latent_image", "concat_mask", "guiding_frame_index", "ref_latent")
    where = "at the start of a clip"

    def check(self, runs, frames):
        self._check_start_only(runs, frames)

    def build(self, vae, clip_vision, positive, negative, pixels, frames, width, height, length):
        node = comfy_node("comfy_extras.nodes_hunyuan", "HunyuanImageToVideo")
        positive, latent = run_node(node, "encode", positive=positive, vae=vae, width=width, height=height,
                                    length=length, batch_size=1, guidance_type="v1 (concat)",
                                    start_image=pixels[0].images)
        return RunInputs(positive, negative, latent["samples"], latent.get("noise_mask"), frames)


def _clip_vision(clip_vision, images, index: int):
    """CLIP vision of one known frame (CLIPVisionEncode with crop 'center'), or None without a CLIP vision model."""
    if clip_vision is None or images is None:
        return None
    return clip_vision.encode_image(images[index:][:1], crop=True)


def input_channels(patcher) -> int | None:
    """Input channels of the diffusion model's first layer (latents plus any image / mask channels)."""
    model = patcher.get_model_object("diffusion_model")
    for name in ("patch_embedding", "img_in", "patchify_proj"):  # Wan, HunyuanVideo (a PatchEmbed), LTX-Video
        layer = getattr(model, name, None)
        weight = getattr(layer, "weight", None)
        if weight is None:
            weight = getattr(getattr(layer, "proj", None), "weight", None)
        if weight is not None:
            return int(weight.shape[1])
    return None


def model_name(patcher) -> str:
    """The model as the messages name it: ComfyUI's class and its input channels."""
    channels = input_channels(patcher)
    return f"{type(patcher.model).__name__}" + (f" ({channels} input channels)" if channels else "")


def hand_off_for(patcher) -> HandOff | None:
    """The hand-off for this ComfyUI model, from its class (None: the model has no learned conditioning)."""
    kind = type(patcher.model).__name__
    if kind == "WAN21_Vace":
        return WanVace()
    if kind == "WAN22":
        return Wan22Latent()
    if kind == "WAN21":
        latent = patcher.get_model_object("latent_format").latent_channels
        if input_channels(patcher) == 2 * latent + 4:  # mask (4) + image latents beside the noisy latents
            return WanImage(getattr(patcher.get_model_object("diffusion_model"), "img_emb", None) is not None)
        return None
    if kind == "LTXV":
        return LtxvGuides()
    if kind == "HunyuanVideoI2V":
        return HunyuanImage()
    return None


def known_pixels(vae, latents: torch.Tensor, indices: list[int], context: torch.Tensor | None,
                 temporal: int) -> list[KnownPixels]:
    """The pixel frames of every run of known latent frames of one clip. `latents` [1, C, len(indices), h, w] are the
    known latents in the order of `indices`; `context` [1, C, c, h, w] the video's latent frames just before a run that
    starts the clip (decoded before it and dropped), or None."""
    order = {index: position for position, index in enumerate(indices)}
    parts = []
    for start, stop in known_runs(indices):
        run = latents[:, :, [order[i] for i in range(start, stop)]]
        lead = context if start == 0 and context is not None and context.shape[2] else None
        decoded = vae.decode(run if lead is None else torch.cat([lead.to(run), run], dim=2))
        decoded = decoded.reshape(-1, *decoded.shape[-3:])[..., :3].float().cpu()
        parts.append(KnownPixels(temporal * start, decoded[len(decoded) - (temporal * (stop - start - 1) + 1):]))
    return parts
