"""Every node that takes the pack's LV_MODEL / LV_VAE, given a ComfyUI model, run as ComfyUI runs it: the model loaded
by ComfyUI's own loader inside torch.inference_mode (ComfyUI's executor runs every node in it, UNETLoader too), adapted
by LongVideoComfyModel, and each node called inside torch.inference_mode. A node either works on it or refuses it by
name before anything is loaded or sampled.

Against the real ComfyUI ($COMFYUI_PATH, default ../shared/comfyui); without it these tests skip with the reason, under
CI (CI=true) they fail instead.
"""

import re
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

import comfy_env

from longvideo.nodes.common import NodeInputError, check_frame_size

pytestmark = pytest.mark.usefixtures("comfyui_session")

CFG = 4.0


def adapt(model, vae=None):
    """LongVideoComfyModel run as ComfyUI runs a node."""
    from longvideo.nodes.comfy_models import FROM_NODE, LongVideoComfyModel

    with torch.inference_mode():
        return LongVideoComfyModel().adapt(model, "simple", FROM_NODE, vae=vae)


@pytest.fixture(scope="module")
def wan21_files(tmp_path_factory):
    """A tiny Wan 2.1 file in a diffusion_models folder ComfyUI searches."""
    comfy_env.comfyui_or_skip()
    folder = tmp_path_factory.mktemp("diffusion_models")
    comfy_env.save_tiny_wan21(str(folder / "tiny_wan21_refusals.safetensors"))
    # The folder_paths UNETLoader reads (an earlier module's teardown may have left sys.modules a fresh one).
    comfy_env.comfy_nodes().folder_paths.add_model_folder_path("diffusion_models", str(folder))
    return "tiny_wan21_refusals.safetensors"


def load_wan21(name, inference=True):
    """ComfyUI's UNETLoader inside torch.inference_mode, as ComfyUI's executor runs it (inference=False: a script)."""
    comfy_nodes = comfy_env.comfy_nodes()
    with torch.inference_mode(inference):
        (model,) = comfy_nodes.UNETLoader().load_unet(name, "default")
    return model


@pytest.fixture(scope="module")
def wan21(wan21_files):
    """ComfyUI's MODEL of the tiny Wan 2.1, loaded as a running ComfyUI loads it: its weights are inference tensors."""
    model = load_wan21(wan21_files)
    assert all(parameter.is_inference() for parameter in model.model.parameters())
    return model


@pytest.fixture(scope="module")
def lv_wan21(wan21):
    model, _ = adapt(wan21)
    return model


@pytest.fixture(scope="module")
def wan22(tmp_path_factory):
    """A tiny Wan 2.2 TI2V-like model (48 channels, 16x), loaded by what UNETLoader calls, inside inference mode."""
    comfy_env.comfyui_or_skip()
    import comfy.sd

    path = comfy_env.save_tiny_wan21(str(tmp_path_factory.mktemp("wan22") / "tiny_wan22.safetensors"), channels=48)
    with torch.inference_mode():
        return comfy.sd.load_diffusion_model(path)


@pytest.fixture(scope="module")
def text():
    """CONDITIONING lists as CLIPTextEncode gives them (umT5's 4096-wide tokens)."""
    generator = torch.Generator().manual_seed(7)
    return ([[torch.randn(1, 6, 4096, generator=generator), {"pooled_output": None}]],
            [[torch.randn(1, 4, 4096, generator=generator), {"pooled_output": None}]])


@contextmanager
def model_calls(patcher):
    """Records every call of the model's network and every model load by ComfyUI's model management; yields the list."""
    import comfy.model_management

    calls = []
    handle = patcher.model.diffusion_model.register_forward_hook(lambda *_: calls.append("forward"))
    load = comfy.model_management.load_models_gpu
    comfy.model_management.load_models_gpu = lambda *args, **kwargs: calls.append("load") or load(*args, **kwargs)
    try:
        yield calls
    finally:
        handle.remove()
        comfy.model_management.load_models_gpu = load


def run_node(cls, **given):
    """The node's FUNCTION with its widgets' defaults and `given`, inside torch.inference_mode as ComfyUI runs it."""
    values = {}
    for name, entry in cls.INPUT_TYPES()["required"].items():
        options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
        if "default" in options:
            values[name] = options["default"]
        elif isinstance(entry[0], (list, tuple)):
            values[name] = entry[0][0]
    with torch.inference_mode():
        return getattr(cls(), cls.FUNCTION)(**{**values, **given})


def refused(cls, patcher, match, **given) -> str:
    """Run the node; expect a NodeInputError that starts with the node's name, matches `match` and is raised before the
    model was loaded or called. Returns the message."""
    with model_calls(patcher) as calls:
        with pytest.raises(NodeInputError) as error:
            run_node(cls, **given)
    message = str(error.value)
    assert message.startswith(f"{cls.__name__}: ") and re.search(match, message), message
    assert calls == []
    return message


def refused_by_name(cls, patcher, match, **given) -> str:
    """refused(), and the message names the ComfyUI model class (WAN21)."""
    message = refused(cls, patcher, match, **given)
    assert f"'model' is ComfyUI's {type(patcher.model).__name__} (from LongVideoComfyModel)" in message, message
    return message


# ---------------------------------------------------------------------------------------------------
# nodes that refuse a ComfyUI model


def test_distributed_sampler_refuses_a_comfyui_model(lv_wan21, wan21, text):
    from longvideo.nodes.distributed import LongVideoDistributedSampler

    message = refused_by_name(LongVideoDistributedSampler, wan21, "not available for them yet: use "
                              "LongVideoContinuationSampler or LongVideoHierarchicalSampler on one GPU",
                              model=lv_wan21, positive=text[0], negative=text[1], virtual_ranks=2, frames_per_clip=4,
                              steps=2)
    assert message.startswith("LongVideoDistributedSampler: 'model' is ComfyUI's WAN21 (from LongVideoComfyModel): ")
    # The same with devices set (worker processes would load the model from its folder).
    refused_by_name(LongVideoDistributedSampler, wan21, "not available", model=lv_wan21, positive=text[0],
                    negative=text[1], devices="cpu, cpu", frames_per_clip=4, steps=2)


def test_temporal_attention_refuses_a_comfyui_model(lv_wan21, wan21):
    from longvideo.nodes.attention import LongVideoTemporalAttention

    for mode in ("full", "window", "dual_scope"):
        refused_by_name(LongVideoTemporalAttention, wan21, r"no temporal attention layers this node can replace.*"
                        r"Context Windows \(Manual\)", model=lv_wan21, mode=mode)


def test_context_windows_refuse_a_comfyui_model_and_name_comfyuis_own(lv_wan21, wan21):
    from longvideo.nodes.context_windows import LongVideoContextWindows

    refused_by_name(LongVideoContextWindows, wan21, r"Context Windows \(Manual\) node .* on the MODEL before "
                    "LongVideoComfyModel", model=lv_wan21, frames_per_window=4, overlap=1)


def test_comfyuis_context_windows_on_the_model_reach_the_samplers(wan21, text):
    """What the refusal points to works: WAN Context Windows (Manual) on the MODEL, then LongVideoComfyModel, then a
    LongVideo sampler: ComfyUI's context handler runs the model on windows of frames."""
    import comfy.context_windows as windows
    from comfy_extras.nodes_context_windows import WanContextWindowsManualNode

    from longvideo.nodes.continuation import LongVideoContinuationSampler

    with torch.inference_mode():
        windowed = WanContextWindowsManualNode.execute(wan21, 9, 4, windows.ContextSchedules.STATIC_STANDARD, 1, False,
                                                       windows.ContextFuseMethods.PYRAMID)[0]
    model, _ = adapt(windowed)
    frames = []
    network = wan21.model.diffusion_model
    handle = network.register_forward_hook(lambda module, args, output: frames.append(args[0].shape[2]))
    try:
        (latent,) = run_node(LongVideoContinuationSampler, model=model, positive=text[0], negative=text[1], width=64,
                             height=64, frames_per_chunk=5, chunks=1, steps=2, cfg=CFG, scheduler="euler")
    finally:
        handle.remove()
    assert latent["samples"].shape == (1, 16, 5, 8, 8) and torch.isfinite(latent["samples"]).all()
    assert set(frames) == {3}  # 9 pixel frames = 3 latent frames per window, not the chunk's 5


def test_co_denoise_refuses_learned_start_frames_on_a_comfyui_model(lv_wan21, wan21, text):
    """Co-denoising runs ComfyUI's models (tests/test_comfy_co_denoise.py) but keeps their start frames with replace:
    their own image conditioning is made for one clip."""
    from longvideo.nodes.co_denoise import LongVideoCoDenoiseSampler

    refused(LongVideoCoDenoiseSampler, wan21, r"method 'learned' on WAN21 .* kept with 'replace'", model=lv_wan21,
            positive=text[0], negative=text[1], frames=8, frames_per_window=4, overlap=2, steps=2, method="learned")


def test_vdp_condition_refuses_a_comfyui_model(lv_wan21, wan21):
    from longvideo.nodes.vdp import LongVideoVDPCondition

    refused(LongVideoVDPCondition, wan21, r"'model' \(WAN21\) is not a video-diffusion-pytorch model: connect "
            "LongVideoVDPLoader", model=lv_wan21)


def test_unknown_latent_format_is_refused_by_name(wan21):
    """A model whose latent format the pack does not know (a newer ComfyUI's video model, an image model) is refused by
    LongVideoComfyModel, naming the format and the known ones, instead of guessing 8x and no temporal compression."""
    import comfy.latent_formats

    from longvideo.models.comfy_model import LATENT_LAYOUTS, LatentLayout, latent_layout

    class FutureVideo(comfy.latent_formats.LatentFormat):
        latent_channels = 32

    for latent_format in (FutureVideo(), comfy.latent_formats.SD15()):
        patched = wan21.clone()
        patched.add_object_patch("latent_format", latent_format)
        with pytest.raises(NodeInputError) as error:
            adapt(patched)
        message = str(error.value)
        assert message.startswith("LongVideoComfyModel: ") and type(latent_format).__name__ in message
        assert all(name in message for name in LATENT_LAYOUTS)

    class Wan21Variant(comfy.latent_formats.Wan21):
        pass

    assert latent_layout(Wan21Variant()) == LatentLayout(16, 8, 4)  # a subclass of a known format keeps its layout


# ---------------------------------------------------------------------------------------------------
# frame sizes: a multiple of the model's VAE compression


def test_frame_size_must_fit_the_model_compression(wan22, lv_wan21, text):
    from longvideo.nodes.continuation import LongVideoContinuationSampler
    from longvideo.nodes.hierarchy import LongVideoHierarchicalSampler

    model, _ = adapt(wan22)
    assert model.downscale == 16
    common = dict(model=model, negative=text[1], steps=2, cfg=CFG, scheduler="euler")
    message = refused(LongVideoContinuationSampler, wan22, "", positive=text[0], width=72, height=64,
                      frames_per_chunk=3, chunks=1, **common)
    assert message == ("LongVideoContinuationSampler: width 72 is not a multiple of 16 (this model's VAE compresses "
                       "16x): use 64 or 80")
    message = refused(LongVideoHierarchicalSampler, wan22, "", prompts=[text[0]], width=64, height=40,
                      keyframes=3, depth=1, **common)
    assert message.endswith("height 40 is not a multiple of 16 (this model's VAE compresses 16x): use 32 or 48")
    # 8x models: multiples of 8, as before.
    check_frame_size("node", 72, 40, lv_wan21)
    with pytest.raises(NodeInputError, match="^node: width 36 is not a multiple of 8: use 32 or 40$"):
        check_frame_size("node", 36, 40, lv_wan21)
    # LTX-Video's VAE: 32x.
    with pytest.raises(NodeInputError, match=r"height 80 is not a multiple of 32 \(this model's VAE compresses 32x\): "
                                             "use 64 or 96"):
        check_frame_size("node", 64, 80, SimpleNamespace(downscale=32))


def test_empty_latent_size_follows_the_vae_compression():
    from longvideo.nodes.latents import LongVideoEmptyLatent

    vae = SimpleNamespace(latent_channels=48, downscale=16)
    with pytest.raises(NodeInputError, match=r"^LongVideoEmptyLatent: width 72 is not a multiple of 16 \(this model's"):
        run_node(LongVideoEmptyLatent, width=72, height=64, frames=3, vae=vae)
    (latent,) = run_node(LongVideoEmptyLatent, width=80, height=64, frames=3, vae=vae)
    assert latent["samples"].shape == (1, 48, 3, 4, 5)


# ---------------------------------------------------------------------------------------------------
# nodes that work on a ComfyUI model


def test_sampler_node_runs_a_comfyui_model(lv_wan21, wan21, text):
    """LongVideoSampler on a ComfyUI model: one clip of ComfyUI's own sampling (its KSampler on the same noise), and
    video-to-video below denoise 1."""
    import comfy.sample

    from longvideo.nodes.sampler import LongVideoSampler

    zeros = torch.zeros(1, 16, 3, 8, 8)
    (latent,) = run_node(LongVideoSampler, model=lv_wan21, positive=text[0], negative=text[1],
                         latent_image={"samples": zeros}, seed=3, steps=2, cfg=CFG, scheduler="euler")
    with torch.inference_mode():
        theirs = comfy.sample.sample(wan21, comfy.sample.prepare_noise(zeros, 3), 2, CFG, "euler", "simple", text[0],
                                     text[1], zeros, disable_pbar=True, seed=3).float()
    assert latent["samples"].shape == zeros.shape and torch.isfinite(latent["samples"]).all()
    assert (latent["samples"] - theirs).abs().max() <= 1e-4
    (refined,) = run_node(LongVideoSampler, model=lv_wan21, positive=text[0], negative=text[1], latent_image=latent,
                          seed=4, steps=4, cfg=CFG, scheduler="euler", denoise=0.5)
    assert refined["samples"].shape == zeros.shape and torch.isfinite(refined["samples"]).all()
    assert not torch.equal(refined["samples"], latent["samples"])


def test_guidance_works_on_weights_loaded_under_inference_mode(wan21_files, wan21, lv_wan21, text):
    """Reconstruction guidance differentiates through the model. ComfyUI loads the weights inside inference mode, so
    they are inference tensors; the guided call still runs, gives exactly what it gives with normal weights, and leaves
    the model as it was."""
    from longvideo.nodes.continuation import LongVideoContinuationSampler

    settings = dict(positive=text[0], negative=text[1], width=64, height=64, frames_per_chunk=4, chunks=2,
                    min_conditioning_frames=2, max_conditioning_frames=2, seed=5, steps=2, cfg=CFG, scheduler="euler")
    network = wan21.model
    parameters = {name: parameter for name, parameter in network.named_parameters()}
    guidance = dict(method="guidance", guidance_weight=2.0)
    (guided,) = run_node(LongVideoContinuationSampler, model=lv_wan21, **guidance, **settings)
    (replaced,) = run_node(LongVideoContinuationSampler, model=lv_wan21, method="replace", **settings)
    normal, _ = adapt(load_wan21(wan21_files, inference=False))
    assert not any(parameter.is_inference() for parameter in normal.patcher.model.parameters())
    (reference,) = run_node(LongVideoContinuationSampler, model=normal, **guidance, **settings)
    assert guided["samples"].shape == (1, 16, 4 + 2, 8, 8) and torch.isfinite(guided["samples"]).all()
    assert torch.equal(guided["samples"], reference["samples"])
    assert (guided["samples"] - replaced["samples"]).abs().max() > 1e-3
    # The weights are the loaded ones again, and no layer keeps a weight function.
    assert all(parameter is parameters[name] for name, parameter in network.named_parameters())
    assert all(parameter.is_inference() for parameter in network.parameters())
    assert not any(getattr(module, "weight_function", None) or getattr(module, "bias_function", None)
                   for module in network.modules())


@pytest.fixture(scope="module")
def wan21_vae(wan21):
    """ComfyUI's Wan 2.1 VAE (its full size: ComfyUI fixes it) with seeded random weights, made inside inference mode as
    VAELoader makes it, adapted by LongVideoComfyModel."""
    import comfy.sd

    with torch.inference_mode():
        vae = comfy.sd.VAE(sd=comfy_env.random_wan21_vae_state())
    return adapt(wan21, vae)[1]


def test_latent_nodes_work_with_a_comfyui_vae(wan21_vae):
    """LongVideoEmptyLatent, LongVideoEncode and LongVideoDecode with ComfyUI's causal video VAE: latent frames in,
    4 x (latent frames - 1) + 1 pixel frames out; a frame count the VAE cannot encode whole is refused with counts that
    fit."""
    from longvideo.nodes.latents import LongVideoDecode, LongVideoEmptyLatent, LongVideoEncode

    (empty,) = run_node(LongVideoEmptyLatent, width=16, height=32, frames=3, vae=wan21_vae)
    assert empty["samples"].shape == (1, 16, 3, 4, 2)
    frames = torch.rand(9, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    (latent,) = run_node(LongVideoEncode, vae=wan21_vae, pixels=frames, frames_per_batch=16)
    assert latent["samples"].shape == (1, 16, 3, 2, 2)
    (images,) = run_node(LongVideoDecode, vae=wan21_vae, samples=latent, frames_per_batch=2)
    assert images.shape == (9, 16, 16, 3) and torch.isfinite(images).all()
    with pytest.raises(NodeInputError, match=r"^LongVideoEncode: 'pixels': 8 pixel frames do not fit .* e\.g\. 5 or 9"):
        run_node(LongVideoEncode, vae=wan21_vae, pixels=frames[:8], frames_per_batch=16)


def test_save_video_decodes_a_comfyui_vae_latent(wan21_vae, tmp_path, monkeypatch):
    """LongVideoSaveVideo with a LATENT and ComfyUI's causal VAE writes every pixel frame, and its progress counts
    pixel frames."""
    import folder_paths

    import longvideo.nodes.video as video_node
    from longvideo.utils.comfy import Progress

    totals = []

    class CountedProgress(Progress):
        def __init__(self, total, description=""):
            totals.append(total)
            super().__init__(total, description)

    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    monkeypatch.setattr(video_node, "Progress", CountedProgress)
    latent = {"samples": torch.randn(1, 16, 3, 2, 2, generator=torch.Generator().manual_seed(1))}
    result = run_node(video_node.LongVideoSaveVideo, filename_prefix="LongVideo/comfy", samples=latent, vae=wan21_vae,
                      frames_per_batch=2)
    assert result["ui"]["images"][0]["frames"] == 9 and totals == [9]


def test_latent_upscale_sizes_follow_the_vae_compression():
    """Wan 2.2 TI2V 5B's latents (48 channels, 16x): width and height in pixels need its VAE; with it they are
    turned into latent sizes at 16x, and scale_by needs none."""
    from longvideo.models.comfy_model import ComfyVAE
    from longvideo.nodes.upscale import LongVideoLatentUpscale

    latents = {"samples": torch.randn(1, 48, 2, 4, 4, generator=torch.Generator().manual_seed(0))}
    upscale = LongVideoLatentUpscale().upscale
    with pytest.raises(NodeInputError, match="'samples' has 48 channels, the latents of a VAE that compresses 16x, so "
                                             "width and height in pixels need the VAE: connect it to 'vae'"):
        upscale(latents, "bilinear", 2.0, 128, 0, 16)
    vae = ComfyVAE(comfy_env.StandInVideoVAE(48, 16, 4))
    (out,) = upscale(latents, "bilinear", 2.0, 128, 0, 16, vae=vae)
    assert out["samples"].shape == (1, 48, 2, 8, 8)
    with pytest.raises(NodeInputError, match="width 120 is not a multiple of 16"):
        upscale(latents, "bilinear", 2.0, 120, 0, 16, vae=vae)
    (doubled,) = upscale(latents, "bilinear", 2.0, 0, 0, 16)
    assert doubled["samples"].shape == (1, 48, 2, 8, 8)


def test_comfyuis_own_validation_runs_the_graph_checks():
    """ComfyUI's validate_prompt (what the queue runs before any node) accepts the shipped workflows and refuses, with
    the pack's one-line reason, what the graph alone shows cannot run."""
    import asyncio
    import json
    import os

    from longvideo import NODE_CLASS_MAPPINGS

    comfy_env.comfyui_or_skip()
    nodes = comfy_env.comfy_nodes()
    import execution

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    added = {name: cls for name, cls in NODE_CLASS_MAPPINGS.items() if name not in nodes.NODE_CLASS_MAPPINGS}
    nodes.NODE_CLASS_MAPPINGS.update(added)
    try:
        def validate(name, **changes):
            prompt = json.load(open(os.path.join(root, "workflows", "api", f"{name}.json")))
            for key, value in changes.items():
                node_id, _, input_name = key.partition("_")
                prompt[node_id]["inputs"][input_name] = value
            valid, _, _, problems = asyncio.run(execution.validate_prompt("check", prompt, None))
            return valid, json.dumps(problems)

        for name in ("continuation", "co_denoise", "hierarchical", "upscale", "text_to_video"):
            assert validate(name)[0], validate(name)[1]
        valid, problems = validate("continuation", **{"5_width": 70})
        assert not valid and "LongVideoContinuationSampler: width 70 is not a multiple of 8: use 64 or 72" in problems
        valid, problems = validate("upscale", **{"5_overlap": 16})
        assert not valid and "LongVideoContextWindows: overlap 16 must be at least 0 and below frames_per_window" in problems
    finally:
        for name in added:
            nodes.NODE_CLASS_MAPPINGS.pop(name, None)
