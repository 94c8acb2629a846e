"""The pack's Wan-class shapes model (checkpoints/longvideo-shapes-wan, tools/train_wan_shapes.py) in the pinned ComfyUI:
its transformers load through UNETLoader as Wan 2.1, its text encoder and VAE work through ComfyUI's own nodes, the
training's image channels are what ComfyUI's WanImageToVideo / WanFirstLastFrameToVideo give the model, and videos the
long-video samplers make with it show the prompt's colour."""

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

import comfy_env

from longvideo.models.loader import ModelLoadError
from longvideo.models.shapes_wan import (SHAPES_WAN_FOLDER, TEXT_TOKENS, TEXT_WIDTH, TRANSFORMER_FILES, load_shapes_wan,
                                         load_shapes_wan_text_and_vae)

pytestmark = pytest.mark.usefixtures("comfyui_session")

PROMPTS = ["a red circle moving right", "a green square moving left", "a blue triangle moving up",
           "a yellow circle moving down"]


@pytest.fixture(scope="module")
def unet_loader():
    """UNETLoader finding the shipped files, called inside torch.inference_mode as ComfyUI's executor calls it."""
    comfy_env.comfyui_or_skip()
    import folder_paths

    folder_paths.add_model_folder_path("diffusion_models", SHAPES_WAN_FOLDER)
    loader = comfy_env.comfy_nodes().UNETLoader()

    def load(variant):
        with torch.inference_mode():
            return loader.load_unet(TRANSFORMER_FILES[variant], "default")[0]

    return load


@pytest.fixture(scope="module")
def parts():
    comfy_env.comfyui_or_skip()
    return load_shapes_wan_text_and_vae()


def shapes_video(seed: int = 3, frames: int = 17) -> torch.Tensor:
    """IMAGE frames [frames, 64, 64, 3] of a random shapes clip."""
    import random

    from longvideo.tools.synthetic_shapes import random_clip, render

    return torch.from_numpy(render(random_clip(random.Random(seed), frames), frames)).float() / 255


def test_the_transformers_load_through_unetloader_as_wan21(unet_loader):
    from longvideo.models.comfy_conditioning import hand_off_for, input_channels

    for variant, channels in (("text-to-video", 16), ("image-to-video", 36)):
        model = unet_loader(variant)
        assert type(model.model).__name__ == "WAN21"
        assert type(model.get_model_object("latent_format")).__name__ == "Wan21"
        assert input_channels(model) == channels
    assert hand_off_for(unet_loader("text-to-video")) is None
    assert type(hand_off_for(unet_loader("image-to-video"))).__name__ == "WanImage"


def test_the_text_to_video_file_is_the_image_model_without_its_image_channels(unet_loader, parts):
    """Without an image ComfyUI gives the 36-channel model zero image channels: the two files sample the same clip."""
    import comfy.sample

    text, _ = parts
    positive, negative = [[text.encode([PROMPTS[0]]), {}]], [[text.encode([""]), {}]]
    latent = torch.zeros(1, 16, 5, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 0)
    clips = [comfy.sample.sample(unet_loader(variant), noise, 6, 5.0, "euler", "simple", positive, negative, latent, seed=0)
             for variant in ("text-to-video", "image-to-video")]
    assert (clips[0] - clips[1]).abs().max() <= 1e-3
    assert clips[0].abs().max() > 0.1


def test_training_image_channels_are_what_comfyui_gives_the_model(unet_loader, parts):
    """tools/train_wan_shapes.py's mask and image latents for 'start 5' and 'first and last' equal ComfyUI's
    WAN21.concat_cond of WanImageToVideo's and WanFirstLastFrameToVideo's conditioning."""
    from comfy_extras.nodes_wan import WanFirstLastFrameToVideo, WanImageToVideo

    from longvideo.models.shapes_wan import ShapesWanVAE
    from longvideo.tools.train_wan_shapes import PATTERNS, image_channel_mask

    _, vae = parts
    standardised = ShapesWanVAE(vae.vae, torch.zeros(16), torch.ones(16))
    model = unet_loader("image-to-video").model
    frames = shapes_video()
    empty = [[torch.zeros(1, 1, TEXT_WIDTH), {}]]
    built = {
        "start 5": WanImageToVideo.execute(empty, empty, vae, 64, 64, 17, 1, start_image=frames[:5]).args[0],
        "first and last": WanFirstLastFrameToVideo.execute(empty, empty, vae, 64, 64, 17, 1, start_image=frames[:1],
                                                           end_image=frames[-1:]).args[0],
    }
    noise = torch.randn(1, 16, 5, 8, 8)
    for name, positive in built.items():
        extras = positive[0][1]
        given = model.concat_cond(noise=noise, concat_latent_image=extras["concat_latent_image"],
                                  concat_mask=extras["concat_mask"], device=torch.device("cpu"))
        known = list(PATTERNS[name][0])
        pixels = torch.full((17, 64, 64, 3), 0.5)
        pixels[known] = frames[known]
        trained = torch.cat([image_channel_mask(tuple(known), 5).view(1, 4, 5, 1, 1).expand(1, 4, 5, 8, 8),
                             standardised.encode(pixels)], 1)
        assert (given - trained).abs().max() <= 1e-5, name


def test_the_vae_works_through_comfyui_nodes_and_its_latent_format(parts):
    from comfy.latent_formats import Wan21

    comfy_nodes = comfy_env.comfy_nodes()
    _, vae = parts
    frames = shapes_video()
    (latent,) = comfy_nodes.VAEEncode().encode(vae, frames)
    assert latent["samples"].shape == (1, 16, 5, 8, 8)
    # ComfyUI's Wan 2.1 latent format takes the latents to the VAE's own standardised latents (what the model learnt)
    own = vae.vae.encode(frames.movedim(-1, 0).unsqueeze(0) * 2 - 1)
    assert (Wan21().process_in(latent["samples"]) - vae.standardise(own)).abs().max() <= 1e-4
    (decoded,) = comfy_nodes.VAEDecode().decode(vae, latent)
    assert decoded.shape == (17, 64, 64, 3)
    assert (decoded - frames).abs().mean() < 0.02
    with pytest.raises(ValueError, match=r"16 frames: this VAE takes 4 x n \+ 1 frames"):
        vae.encode(frames[:16])


def test_the_text_encoder_works_through_clip_text_encode(parts):
    comfy_nodes = comfy_env.comfy_nodes()
    text, _ = parts
    (conditioning,) = comfy_nodes.CLIPTextEncode().encode(text, PROMPTS[0])
    (other,) = comfy_nodes.CLIPTextEncode().encode(text, PROMPTS[1])
    tokens = conditioning[0][0]
    assert tokens.shape == (1, TEXT_TOKENS, TEXT_WIDTH)
    width = text.encoder.width
    assert tokens[..., width:].abs().max() == 0 and tokens[..., :width].abs().max() > 0
    assert (tokens - other[0][0]).abs().max() > 0.1
    with pytest.raises(ValueError, match="tokens come from another text encoder"):
        text.encode_from_tokens_scheduled({"l": [[(1, 1.0)]]})


def test_the_loader_node_and_a_missing_file(tmp_path):
    comfy_env.comfyui_or_skip()
    from longvideo.nodes.comfy_models import LongVideoShapesWanLoader

    with torch.inference_mode():
        model, clip, vae = LongVideoShapesWanLoader().load("text-to-video")
    assert model.get_model_object("diffusion_model").patch_embedding.weight.shape[1] == 16
    assert hasattr(clip, "encode_from_tokens_scheduled") and vae.latent_channels == 16
    with pytest.raises(ModelLoadError, match="shapes_wan_i2v.safetensors is missing.*train_wan_shapes.py"):
        load_shapes_wan("image-to-video", str(tmp_path))


@pytest.mark.parametrize("mode", ["continuation", "hierarchical", "interpolation"])
def test_long_videos_show_the_prompts_colour(mode):
    """Through the pack's samplers and ComfyUI's sampling, with method 'learned' (WanImageToVideo hand-offs between
    chunks, WanFirstLastFrameToVideo infill between keyframes and between neighbouring frames of a latent interpolation
    in windows of 2): the prompt's colour in at least 90% of frames, over the four colours the model knows."""
    comfy_env.comfyui_or_skip()
    from longvideo.bench.quality import MODES, SHAPES_WAN_OPTIONS, Options, load_shapes_wan_model, measure, prompt_parts

    model = load_shapes_wan_model(0.0)
    options = replace(Options(**SHAPES_WAN_OPTIONS), method="learned", chunks=3, steps=12)
    identity = []
    for prompt in PROMPTS:
        generated = MODES[mode](model, prompt, 0, options)
        assert generated.video.shape[1:] == (64, 64, 3)
        identity.append(measure(generated, *prompt_parts(prompt)[:2]).identity)
    assert np.mean(identity) >= 0.9, identity


@pytest.mark.parametrize("name,frames,colour", [("shapes_wan_continuation", 4 * (5 + 7 * 3 - 1) + 1, "red"),
                                                 ("shapes_wan_hierarchical", 4 * ((5 - 1) ** 3 + 1 - 1) + 1, "blue")])
def test_the_shipped_workflows_make_long_videos_of_the_prompts_colour(name, frames, colour, tmp_path):
    """workflows/comfyui/shapes_wan_*.json as shipped (continuation: 8 chunks, learned; hierarchical: depth 3, blend),
    on ComfyUI's own nodes inside torch.inference_mode: every frame there, the object in the prompt's colour in at least
    90% of them, read back from the saved mp4."""
    import av

    comfy_env.comfyui_or_skip()
    import folder_paths

    from longvideo import NODE_CLASS_MAPPINGS
    from longvideo.tools.synthetic_shapes import find_shape
    from longvideo.utils.workflow import load_workflow, run_workflow

    comfy_nodes = comfy_env.comfy_nodes()
    classes = {**comfy_nodes.NODE_CLASS_MAPPINGS, **NODE_CLASS_MAPPINGS}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    api = load_workflow(os.path.join(root, "workflows", "comfyui", "api", f"{name}.json"), classes)
    previous = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path))
    try:
        with torch.inference_mode():
            ui_out = run_workflow(api, classes)
    finally:
        folder_paths.set_output_directory(previous)
    (saved,) = [entry for node_ui in ui_out.values() for entry in node_ui["images"]]
    with av.open(str(tmp_path / saved["subfolder"] / saved["filename"])) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == frames
    assert np.mean([find_shape(frame).colour == colour for frame in decoded]) >= 0.9
