"""The long-video strategies on ComfyUI's own video models, against the real ComfyUI ($COMFYUI_PATH, default
../shared/comfyui): a tiny random Wan 2.1 checkpoint saved as safetensors and loaded through ComfyUI's UNETLoader.

Without ComfyUI these tests skip with the reason; under CI (CI=true) they fail instead, so CI always runs them.
"""

import os

import pytest
import torch

import comfy_env

from longvideo.models.comfy_model import LATENT_LAYOUTS, ComfyDenoiser, LatentLayout, latent_layout
from longvideo.models.denoiser import KnownFrames
from longvideo.sampling import continuation, hierarchy, interpolation
from longvideo.sampling.denoise import TextGuidance, denoise
from longvideo.sampling.frame_conditioning import GuidanceConditioning

pytestmark = pytest.mark.usefixtures("comfyui_session")

SHAPE = (1, 16, 5, 8, 8)
STEPS = 3
CFG = 4.0


@pytest.fixture(scope="module")
def wan21(tmp_path_factory):
    """ComfyUI's MODEL of a tiny Wan 2.1 file, loaded by ComfyUI's own UNETLoader from a diffusion_models folder."""
    comfy_env.comfyui_or_skip()
    import folder_paths
    comfy_nodes = comfy_env.comfy_nodes()

    folder = tmp_path_factory.mktemp("diffusion_models")
    comfy_env.save_tiny_wan21(str(folder / "tiny_wan21.safetensors"))
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    (model,) = comfy_nodes.UNETLoader().load_unet("tiny_wan21.safetensors", "default")
    return model


@pytest.fixture(scope="module")
def text():
    generator = torch.Generator().manual_seed(7)
    return torch.randn(1, 6, 4096, generator=generator), torch.randn(1, 4, 4096, generator=generator)


def with_sampling(model, kind):
    """The model as ComfyUI's ModelSamplingDiscrete node patches it (kind eps or v_prediction); flow as loaded."""
    if kind == "flow":
        return model
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

    return ModelSamplingDiscrete().patch(model, kind, False)[0]


def comfy_sample(model, noise, sampler, positive, negative, latent, mask=None, steps=STEPS, cfg=CFG, seed=0):
    """ComfyUI's own KSampler path (comfy.sample.sample) with the simple schedule."""
    import comfy.sample

    def listed(c):
        return c if isinstance(c, list) else [[c, {}]]

    return comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", listed(positive), listed(negative), latent,
                               noise_mask=mask, disable_pbar=True, seed=seed).float()


def prompts(model, positive, negative, node="test"):
    """CONDITIONING lists as the nodes turn them into the samplers' prompts (tokens and the whole list)."""
    from longvideo.nodes.common import conditioning_prompt

    return conditioning_prompt(positive, node, "positive", model), conditioning_prompt(negative, node, "negative", model)


def test_latent_layouts_give_pixel_frames():
    comfy_env.comfyui_or_skip()
    import comfy.latent_formats as formats

    assert latent_layout(formats.Wan21()) == LatentLayout(16, 8, 4)
    assert latent_layout(formats.Wan22()) == LatentLayout(48, 16, 4)
    assert latent_layout(formats.HunyuanVideo()) == LatentLayout(16, 8, 4)
    assert latent_layout(formats.LTXV()) == LatentLayout(128, 32, 8)
    wan, ltxv = LATENT_LAYOUTS["Wan21"], LATENT_LAYOUTS["LTXV"]
    assert [wan.pixel_frames(n) for n in (1, 2, 5, 21)] == [1, 5, 17, 81]
    assert [ltxv.pixel_frames(n) for n in (1, 2, 4, 13)] == [1, 9, 25, 97]
    assert wan.latent_frames(81) == 21 and ltxv.latent_frames(97) == 13
    assert list(wan.pixel_span(0)) == [0] and list(wan.pixel_span(2)) == [5, 6, 7, 8]
    with pytest.raises(ValueError, match="e.g. 13 or 17"):
        wan.latent_frames(16)
    with pytest.raises(ValueError, match="e.g. 17 or 25"):
        ltxv.latent_frames(20)


def test_model_layout_read_from_comfyui(wan21):
    denoiser = ComfyDenoiser(wan21)
    assert (denoiser.latent_channels, denoiser.downscale, denoiser.layout.temporal) == (16, 8, 4)
    assert denoiser.prediction_type == "flow" and denoiser.context_width == 4096
    assert ComfyDenoiser(with_sampling(wan21, "eps")).prediction_type == "epsilon"
    assert ComfyDenoiser(with_sampling(wan21, "v_prediction")).prediction_type == "v_prediction"


@pytest.mark.parametrize("kind,sampler", [("flow", "euler"), ("flow", "uni_pc"), ("flow", "dpmpp_2m"),
                                          ("eps", "euler"), ("v_prediction", "dpmpp_2m")])
def test_one_clip_equals_comfyui_sampling(wan21, text, kind, sampler):
    import comfy.sample

    model = with_sampling(wan21, kind)
    positive, negative = text
    ours = denoise(ComfyDenoiser(model), TextGuidance(positive, negative, CFG), SHAPE, steps=STEPS, seed=3,
                   scheduler="unipc" if sampler == "uni_pc" else sampler)
    zeros = torch.zeros(SHAPE)
    theirs = comfy_sample(model, comfy.sample.prepare_noise(zeros, 3), sampler, positive, negative, zeros, seed=3)
    assert torch.isfinite(ours).all() and ours.abs().mean() > 0.1
    assert (ours - theirs).abs().max() <= 1e-4


@pytest.mark.parametrize("kind", ["flow", "eps"])
def test_continuation_chunk_is_comfyui_with_noise_mask(wan21, text, kind):
    import comfy.sample

    model = with_sampling(wan21, kind)
    positive, negative = text
    settings = continuation.ContinuationSettings(frames_per_chunk=4, chunks=2, min_known=2, max_known=2)
    video = continuation.continue_video(ComfyDenoiser(model), [TextGuidance(positive, negative, CFG)], settings,
                                        size=(1, 8, 8), steps=STEPS, seed=11, scheduler="euler")
    assert video.shape == (1, 16, 4 + 2, 8, 8)
    zeros = torch.zeros(1, 16, 4, 8, 8)
    # Chunk 0: plain ComfyUI sampling with its own seed.
    first = comfy_sample(model, comfy.sample.prepare_noise(zeros, continuation.chunk_seed(11, 0)), "euler", positive, negative, zeros)
    assert (video[:, :, :4] - first).abs().max() <= 1e-4
    # Chunk 1: ComfyUI's sampler with a noise mask keeping its first two frames (the last two of chunk 0).
    latent = model.get_model_object("latent_format").process_out(torch.zeros_like(zeros))
    latent[:, :, :2] = video[:, :, 2:4]
    mask = torch.ones(1, 1, 4, 8, 8)
    mask[:, :, :2] = 0
    second = comfy_sample(model, comfy.sample.prepare_noise(zeros, continuation.chunk_seed(11, 1)), "euler", positive,
                          negative, latent, mask=mask)
    assert (second[:, :, :2] - video[:, :, 2:4]).abs().max() <= 1e-4  # ComfyUI keeps the masked frames (up to scaling)
    assert (video[:, :, 4:] - second[:, :, 2:]).abs().max() <= 1e-4


def test_continuation_keeps_known_frames_exact(wan21, text):
    positive, negative = text
    start = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    settings = continuation.ContinuationSettings(frames_per_chunk=4, chunks=2, min_known=1, max_known=3)
    video = continuation.continue_video(ComfyDenoiser(wan21), [TextGuidance(positive, negative, CFG)], settings,
                                        size=(1, 8, 8), steps=STEPS, seed=5, scheduler="dpmpp_2m", start=start)
    counts = continuation.known_frame_counts(settings, 5, 3)
    assert video.shape[2] == 3 + sum(4 - k for k in counts)
    assert torch.equal(video[:, :, :3], start)
    # A chunk's result holds its known frames exactly (the strategy keeps only new frames, the executor writes them back).
    denoiser = ComfyDenoiser(wan21)
    known = KnownFrames([0, 1], start[:, :, 1:])
    from longvideo.sampling.frame_conditioning import ReplaceConditioning

    chunk = denoise(denoiser, TextGuidance(positive, negative, CFG), (1, 16, 4, 8, 8), steps=STEPS, seed=2,
                    scheduler="euler", conditioning=ReplaceConditioning(known))
    assert torch.equal(chunk[:, :, :2], start[:, :, 1:])


def test_hierarchical_keeps_parents_and_batches_segments(wan21, text):
    positive, negative = text
    denoiser = ComfyDenoiser(wan21)
    plan1, plan2 = hierarchy.HierarchyPlan(3, 1), hierarchy.HierarchyPlan(3, 2)

    def run(plan, cap):
        return hierarchy.sample_hierarchy(denoiser, plan, [[positive]] * plan.depth, negative, CFG,
                                          hierarchy.HierarchySettings(batch_cap=cap), size=(8, 8), steps=STEPS, seed=9,
                                          scheduler="euler")

    keyframes = run(plan1, 1)
    one_at_a_time, batched = run(plan2, 1), run(plan2, 2)
    assert batched.shape == (1, 16, 5, 8, 8)
    assert torch.equal(batched[:, :, [0, 2, 4]], keyframes)  # parents exact
    assert (batched - one_at_a_time).abs().max() <= 1e-4  # a segment comes out alike alone or in a batch
    assert not torch.equal(batched[:, :, 1], batched[:, :, 3])


def test_blend_runs_on_comfyui_models_as_replace_from_the_blend(wan21, text):
    """blend: ComfyUI's sampler starts from the known frames mixed along time at the blend's denoise, with the noise
    mask on the known frames; the known frames come out exact, and with the given steps it differs from replace."""
    positive, negative = text
    latents = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(4))

    def run(method):
        settings = interpolation.InterpolationSettings(factor=2, window=3, overlap=1, method=method, blend_strength=0.5)
        return interpolation.interpolate_latents(ComfyDenoiser(wan21), TextGuidance(positive, negative, CFG), latents,
                                                 settings, steps=4, seed=1, scheduler="euler")

    blended, replaced = run("blend"), run("replace")
    assert torch.equal(blended[:, :, ::2], latents) and torch.isfinite(blended).all()
    assert not torch.equal(blended, replaced)


def test_resample_is_refused_on_comfyui_models_with_the_alternatives(wan21, text):
    positive, negative = text
    settings = interpolation.InterpolationSettings(factor=2, window=3, overlap=1, method="resample")
    with pytest.raises(ValueError, match="'resample' is not available for ComfyUI models.*'blend'"):
        interpolation.interpolate_latents(ComfyDenoiser(wan21), TextGuidance(positive, negative, CFG),
                                          torch.zeros(1, 16, 2, 8, 8), settings, steps=2, seed=1, scheduler="euler")


def test_interpolation_keeps_inputs(wan21, text):
    positive, negative = text
    latents = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    out = interpolation.interpolate_latents(ComfyDenoiser(wan21), TextGuidance(positive, negative, CFG), latents,
                                            interpolation.InterpolationSettings(factor=2, window=3, overlap=1),
                                            steps=STEPS, seed=1, scheduler="euler")
    assert out.shape == (1, 16, 5, 8, 8)
    assert torch.equal(out[:, :, ::2], latents)


def test_guidance_steers_the_clean_estimate_under_inference_mode(wan21, text):
    """Reconstruction guidance runs inside ComfyUI's torch.inference_mode and changes the result."""
    positive, negative = text
    known = KnownFrames([0], torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(2)))
    denoiser = ComfyDenoiser(wan21)
    guidance = TextGuidance(positive, negative, CFG)
    with torch.inference_mode():
        plain = denoise(denoiser, guidance, SHAPE, steps=STEPS, seed=3, scheduler="euler")
        guided = denoise(denoiser, guidance, SHAPE, steps=STEPS, seed=3, scheduler="euler",
                         conditioning=GuidanceConditioning(known, 1.0, denoiser.prediction_type))
    assert torch.isfinite(guided).all()
    assert (guided - plain).abs().max() > 1e-3


def test_learned_is_refused_on_a_text_to_video_model_naming_it(wan21, text):
    from longvideo.sampling.frame_conditioning import LearnedConditioning

    known = KnownFrames([0], torch.zeros(1, 16, 1, 8, 8))
    with pytest.raises(ValueError, match=r"'learned' needs a model with its own image conditioning, and this one "
                                         r"\(WAN21 \(16 input channels\)\) has none"):
        denoise(ComfyDenoiser(wan21), TextGuidance(*text, CFG), SHAPE, steps=1, seed=0, scheduler="euler",
                conditioning=LearnedConditioning(known))


# ---------------------------------------------------------------------------------------------------
# nodes: ComfyUI's MODEL / VAE / CLIP into the LongVideo samplers


class StandInClip:
    """ComfyUI's CLIP interface (tokenize, encode_from_tokens_scheduled) giving seeded 4096-wide embeddings: umT5-xxl's
    size is fixed in ComfyUI, so no tiny one can be loaded."""

    def tokenize(self, text):
        return text

    def encode_from_tokens_scheduled(self, tokens):
        seed = sum(map(ord, tokens))
        return [[torch.randn(1, 5, 4096, generator=torch.Generator().manual_seed(seed)), {"pooled_output": None}]]


class StandInCausalVAE:
    """ComfyUI's VAE interface for a Wan-like causal video VAE (16 channels, 8x, 4x in time, causal first frame):
    latent frame i decodes to its pixel frames from itself and latent frame i - 1 (a receptive field of one frame)."""

    latent_channels = 16
    temporal = 4
    downscale_ratio = (lambda a: max(0, (a + 3) // 4), 8, 8)
    upscale_ratio = (lambda a: max(0, a * 4 - 3), 8, 8)

    def decode(self, latents):
        frames, scale = [], self.upscale_ratio[1]
        for i in range(latents.shape[2]):
            mixed = latents[:, :3, i] + 0.5 * (latents[:, :3, i - 1] if i else 0)
            image = torch.sigmoid(mixed).repeat_interleave(scale, -1).repeat_interleave(scale, -2).permute(0, 2, 3, 1)
            count = 1 if i == 0 else self.temporal
            frames += [image * (0.9 + 0.02 * j) for j in range(count)]
        return torch.stack(frames, dim=1)  # [B, T, H, W, 3] like comfy.sd.VAE.decode

    def encode(self, images):
        raise NotImplementedError

    @classmethod
    def like(cls, channels: int, layout: LatentLayout):
        """The same kind of stand-in with another model's channels, downscale and temporal compression (LTXV: 8x)."""
        t = layout.temporal
        attributes = {"latent_channels": channels, "temporal": t,
                      "downscale_ratio": (lambda a: max(0, (a + t - 1) // t), layout.downscale, layout.downscale),
                      "upscale_ratio": (lambda a: max(0, a * t - t + 1), layout.downscale, layout.downscale)}
        return type(f"StandIn{channels}x{t}", (cls,), attributes)()


def test_nodes_drive_continuation_and_hierarchy(wan21, text):
    from longvideo.nodes.comfy_models import FROM_NODE, LongVideoComfyModel, LongVideoComfyPromptSchedule
    from longvideo.nodes.continuation import LongVideoContinuationSampler
    from longvideo.nodes.hierarchy import LongVideoHierarchicalSampler

    model, vae = LongVideoComfyModel().adapt(wan21, "simple", FROM_NODE)
    assert vae is None and model.latent_channels == 16
    positive, negative = [[text[0], {"pooled_output": None}]], [[text[1], {"pooled_output": None}]]
    (latent,) = LongVideoContinuationSampler().sample(model, positive, negative, 64, 64, 4, 2, 1, 1, "replace", 1, 2, CFG, "euler")
    assert latent["samples"].shape == (1, 16, 4 + 3, 8, 8)  # 7 latent frames = 25 pixel frames
    (prompts,) = LongVideoComfyPromptSchedule().encode(StandInClip(), "a red ball\n\na blue ball")
    assert len(prompts) == 2
    (video,) = LongVideoHierarchicalSampler().sample(model, prompts, negative, "timeline", 64, 64, 3, 2, "replace", 2, 2, CFG,
                                                     "unipc", 2)
    assert video["samples"].shape == (1, 16, 5, 8, 8)
    with pytest.raises(ValueError, match="not one of ComfyUI's"):
        LongVideoComfyModel().adapt(wan21, "no-such-schedule", FROM_NODE)


def test_streaming_decode_continues_a_causal_vae(tmp_path):
    comfy_env.comfyui_or_skip()
    import av
    import folder_paths

    from longvideo.models.comfy_model import ComfyVAE
    from longvideo.nodes.video import LongVideoSaveVideo

    latents = torch.randn(1, 16, 7, 4, 4, generator=torch.Generator().manual_seed(0))
    vae = ComfyVAE(StandInCausalVAE(), context=1)
    assert (vae.latent_channels, vae.downscale, vae.temporal) == (16, 8, 4)
    whole = StandInCausalVAE().decode(latents)[0]
    batches = list(vae.decode_batches(latents, 3))
    assert [len(b) for b in batches] == [1 + 4 * 2, 4 * 3, 4 * 1]
    assert torch.equal(torch.cat(batches), whole)  # no seam once the context covers the decoder's memory
    without_context = torch.cat(list(ComfyVAE(StandInCausalVAE(), context=0).decode_batches(latents, 3)))
    assert len(without_context) == len(whole) - 6  # without context every later batch restarts as a causal first frame

    previous = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path))
    try:
        result = LongVideoSaveVideo().save("LongVideo/wan", 16.0, "mp4", 19, samples={"samples": latents}, vae=vae,
                                           frames_per_batch=3)
    finally:
        folder_paths.set_output_directory(previous)
    info = result["ui"]["images"][0]
    assert info["frames"] == 25
    with av.open(str(tmp_path / info["subfolder"] / info["filename"])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 25


def test_wan21_vae_streams_exactly_across_decode_batches():
    """ComfyUI's own Wan 2.1 VAE (comfy.sd.VAE from a state dict, random weights): batches that carry the decoder's
    causal cache are the whole decode (to float rounding); re-decoding a context instead is not (this random decoder
    remembers longer than one latent frame)."""
    comfy_env.comfyui_or_skip()
    import comfy.sd

    from longvideo.models.comfy_model import ComfyVAE

    vae = comfy.sd.VAE(sd=comfy_env.random_wan21_vae_state())
    latents = torch.randn(1, 16, 5, 2, 2, generator=torch.Generator().manual_seed(3))
    whole = vae.decode(latents)[0]
    adapted = ComfyVAE(vae, context=1)
    assert adapted.streams_exactly and (adapted.temporal, adapted.downscale) == (4, 8)
    batches = list(adapted.decode_batches(latents, 2))
    assert [len(b) for b in batches] == [1 + 4, 4 * 2, 4 * 1]
    assert (torch.cat(batches) - whole).abs().max() <= 1e-5  # float rounding of the 1x1x1 input convolution on slices
    with_context = torch.cat(list(ComfyVAE(vae, context=1, carry_cache=False).decode_batches(latents, 2)))
    assert with_context.shape == whole.shape and (with_context - whole).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------------
# the shipped Wan 2.1 workflows, run against the real ComfyUI's core nodes

WORKFLOWS = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "workflows", "comfyui")
# The files the README and docs/comfyui_models.md tell users to download, and the tiny stand-in each is saved as.
DIFFUSION_MODELS = {
    "wan2.1_t2v_1.3B_fp16.safetensors": {},
    "wan2.1_vace_1.3B_fp16.safetensors": {"kind": "vace"},
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": {"seed": 1},
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": {"seed": 2},
    "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors": {"seed": 3, "extra_in": 20},
    "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors": {"seed": 4, "extra_in": 20},
}
OTHER_FILES = {"text_encoders": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "vae": "wan_2.1_vae.safetensors"}


def stand_in_loaders():
    """ComfyUI's CLIPLoader and VAELoader (same inputs, same file lookup) returning stand-ins: ComfyUI fixes umT5-xxl's
    size (5.7 B parameters) and the Wan VAE's width, so no tiny file of theirs can be loaded. The VAE stand-in encodes
    too (method 'learned' hands known frames over as pixels)."""
    import folder_paths
    comfy_nodes = comfy_env.comfy_nodes()

    class CLIPLoader(comfy_nodes.CLIPLoader):
        def load_clip(self, clip_name, type="stable_diffusion", device="default"):
            folder_paths.get_full_path_or_raise("text_encoders", clip_name)
            assert type == "wan"
            return (StandInClip(),)

    class VAELoader(comfy_nodes.VAELoader):
        def load_vae(self, vae_name):
            folder_paths.get_full_path_or_raise("vae", vae_name)
            return (comfy_env.StandInVideoVAE(16, 8, 4),)

    return {"CLIPLoader": CLIPLoader, "VAELoader": VAELoader}


@pytest.fixture(scope="module")
def wan_files(tmp_path_factory):
    """Tiny stand-ins under the file names users download, in ComfyUI's model folders."""
    comfy_env.comfyui_or_skip()
    import folder_paths
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("wan_files")
    for kind in ("diffusion_models", *OTHER_FILES):
        (root / kind).mkdir()
        folder_paths.add_model_folder_path(kind, str(root / kind), is_default=True)
    for name, options in DIFFUSION_MODELS.items():
        comfy_env.save_tiny_wan21(str(root / "diffusion_models" / name), **options)
    for kind, name in OTHER_FILES.items():
        save_file({"stand_in": torch.zeros(1)}, str(root / kind / name))
    return root


@pytest.fixture
def output_folder(tmp_path, wan_files):
    import folder_paths

    previous = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    yield tmp_path / "output"
    folder_paths.set_output_directory(previous)


@pytest.mark.parametrize("name,latent_frames", [("wan21_hierarchical", 5), ("wan21_continuation", 4 + 2),
                                                ("wan22_a14b_hierarchical", 5), ("wan21_vace_continuation", 4 + 2)])
def test_wan_workflow_runs_on_comfyui_nodes(name, latent_frames, output_folder):
    import av
    import json
    comfy_nodes = comfy_env.comfy_nodes()

    from longvideo import NODE_CLASS_MAPPINGS
    from longvideo.utils.workflow import api_to_ui, load_workflow, run_workflow, ui_to_api

    classes = {**comfy_nodes.NODE_CLASS_MAPPINGS, **NODE_CLASS_MAPPINGS}
    api = load_workflow(os.path.join(WORKFLOWS, "api", f"{name}.json"), classes)
    ui = json.load(open(os.path.join(WORKFLOWS, f"{name}.json")))
    made = json.loads(json.dumps(api_to_ui(api, classes)))  # tools/build_comfy_workflows.py made it, then laid it out

    def content(workflow):  # where nodes sit is tests/test_ui_layout.py's
        return [{k: v for k, v in n.items() if k not in ("pos", "size")} for n in workflow["nodes"]], workflow["links"]

    assert content(ui) == content(made)
    assert {k: v["inputs"] for k, v in ui_to_api(ui, classes).items()} == {k: v["inputs"] for k, v in api.items()}
    used = {node["inputs"]["unet_name"] for node in api.values() if node["class_type"] == "UNETLoader"}
    assert used <= set(DIFFUSION_MODELS)  # the file names the docs give
    # Small and quick: 64x64 frames, 2 steps, L = 3 and depth 2, or 2 chunks of 4 latent frames.
    small = {"width": 64, "height": 64, "steps": 2, "keyframes": 3, "depth": 2, "frames_per_chunk": 4, "chunks": 2}
    for node in api.values():
        node["inputs"].update({k: v for k, v in small.items() if k in node["inputs"]})
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        ui_out = run_workflow(api, {**classes, **stand_in_loaders()})
    (saved,) = [entry for node_ui in ui_out.values() for entry in node_ui["images"]]
    pixel_frames = 4 * (latent_frames - 1) + 1
    assert saved["frames"] == pixel_frames
    with av.open(str(output_folder / saved["subfolder"] / saved["filename"])) as container:
        assert sum(1 for _ in container.decode(video=0)) == pixel_frames


# ---------------------------------------------------------------------------------------------------
# Wan 2.2 (48-channel latents, 16x downscale: the TI2V 5B layout)


@pytest.fixture(scope="module")
def wan22(tmp_path_factory):
    comfy_env.comfyui_or_skip()
    import comfy.sd

    path = comfy_env.save_tiny_wan21(str(tmp_path_factory.mktemp("wan22") / "tiny_wan22.safetensors"), channels=48)
    return comfy.sd.load_diffusion_model(path)  # what UNETLoader calls


def test_wan22_clip_and_masked_chunk_equal_comfyui(wan22, text):
    import comfy.sample

    denoiser = ComfyDenoiser(wan22)
    assert type(wan22.model).__name__ == "WAN22" and denoiser.layout == LatentLayout(48, 16, 4)
    positive, negative = text
    shape = (1, 48, 3, 4, 4)
    zeros = torch.zeros(shape)
    noise = comfy.sample.prepare_noise(zeros, 3)
    ours = denoise(denoiser, TextGuidance(positive, negative, CFG), shape, steps=STEPS, seed=3, scheduler="uni_pc")
    assert (ours - comfy_sample(wan22, noise, "uni_pc", positive, negative, zeros, seed=3)).abs().max() <= 1e-4
    from longvideo.sampling.frame_conditioning import ReplaceConditioning

    known = torch.randn(1, 48, 1, 4, 4, generator=torch.Generator().manual_seed(8))
    chunk = denoise(denoiser, TextGuidance(positive, negative, CFG), shape, steps=STEPS, seed=3, scheduler="euler",
                    conditioning=ReplaceConditioning(KnownFrames([0], known)))
    latent = wan22.get_model_object("latent_format").process_out(torch.zeros(shape))
    latent[:, :, :1] = known
    mask = torch.ones(1, 1, 3, 4, 4)
    mask[:, :, 0] = 0
    reference = comfy_sample(wan22, noise, "euler", positive, negative, latent, mask=mask, seed=3)
    assert torch.equal(chunk[:, :, :1], known)
    assert (chunk[:, :, 1:] - reference[:, :, 1:]).abs().max() <= 1e-4


# ---------------------------------------------------------------------------------------------------
# ComfyUI's whole CONDITIONING (tokens + extras) reaches ComfyUI's sampling; frame-laid extras are cut to each run


def test_frame_laid_conditioning_is_cut_to_the_run_frames():
    from longvideo.models.comfy_model import ComfyConditioning

    image, mask = torch.randn(1, 16, 6, 4, 4), torch.ones(1, 1, 6, 4, 4)
    plain = ComfyConditioning([[torch.zeros(1, 2, 8), {"pooled_output": torch.ones(1, 3)}]], "node: 'positive'")
    assert plain.for_frames([1, 3], 6) is plain  # nothing laid along the frames: unchanged, whatever the run
    laid = ComfyConditioning([[torch.zeros(1, 2, 8), {"concat_latent_image": image, "concat_mask": mask, "other": 1}]],
                             "node: 'positive'")
    cut = laid.for_frames([2, 3, 4, 5], 6)
    assert torch.equal(cut.entries[0][1]["concat_latent_image"], image[:, :, 2:6])
    assert cut.entries[0][1]["concat_mask"].shape[2] == 4 and cut.entries[0][1]["other"] == 1
    assert laid.entries[0][1]["concat_latent_image"] is image  # the user's conditioning is not changed
    with pytest.raises(ValueError, match="'positive': its 'concat_latent_image' covers 6 latent frames but the video has 9"):
        laid.for_frames([0, 1, 2], 9)
    with pytest.raises(ValueError, match="'positive': its 'concat_latent_image' is laid along .* spaced 2 apart"):
        laid.for_frames([0, 2, 4], 6)


@pytest.fixture(scope="module")
def wan_i2v(tmp_path_factory):
    """A tiny Wan with the 36 input channels of image-to-video (4 mask + 16 image channels besides the latents)."""
    comfy_env.comfyui_or_skip()
    import comfy.sd

    path = comfy_env.save_tiny_wan21(str(tmp_path_factory.mktemp("wan_i2v") / "tiny_wan_i2v.safetensors"), extra_in=20)
    return comfy.sd.load_diffusion_model(path)


def test_continuation_cuts_wan_image_to_video_conditioning_to_each_chunk(wan_i2v, text):
    """WanImageToVideo's concat_latent_image / concat_mask cover the whole video; chunk c sees its own frames of them."""
    import comfy.sample

    total = 4 + 2  # two chunks of 4 latent frames, 2 known
    generator = torch.Generator().manual_seed(5)
    image = torch.randn(1, 16, total, 8, 8, generator=generator)
    mask = torch.ones(1, 1, total, 8, 8)
    mask[:, :, 0] = 0.0
    extras = {"concat_latent_image": image, "concat_mask": mask}
    positive, negative = [[text[0], dict(extras)]], [[text[1], dict(extras)]]
    denoiser = ComfyDenoiser(wan_i2v)
    settings = continuation.ContinuationSettings(frames_per_chunk=4, chunks=2, min_known=2, max_known=2)
    guidance = TextGuidance.from_prompts(*prompts(denoiser, positive, negative), CFG)
    video = continuation.continue_video(denoiser, [guidance], settings, size=(1, 8, 8), steps=STEPS, seed=11,
                                        scheduler="euler")
    zeros = torch.zeros(1, 16, 4, 8, 8)

    def cut(frames):
        return {"concat_latent_image": image[:, :, frames], "concat_mask": mask[:, :, frames]}

    first = comfy_sample(wan_i2v, comfy.sample.prepare_noise(zeros, continuation.chunk_seed(11, 0)), "euler",
                         [[text[0], cut(slice(0, 4))]], [[text[1], cut(slice(0, 4))]], zeros)
    assert (video[:, :, :4] - first).abs().max() <= 1e-4
    latent = zeros.clone()
    latent[:, :, :2] = video[:, :, 2:4]
    noise_mask = torch.ones(1, 1, 4, 8, 8)
    noise_mask[:, :, :2] = 0
    second = comfy_sample(wan_i2v, comfy.sample.prepare_noise(zeros, continuation.chunk_seed(11, 1)), "euler",
                          [[text[0], cut(slice(2, 6))]], [[text[1], cut(slice(2, 6))]], latent, mask=noise_mask)
    assert (video[:, :, 4:] - second[:, :, 2:]).abs().max() <= 1e-4
    # Without the cut, chunk 0 would not even run (6 concat frames beside 4 sampled); check the extras mattered.
    plain = continuation.continue_video(denoiser, [TextGuidance(*text, CFG)], settings, size=(1, 8, 8), steps=STEPS,
                                        seed=11, scheduler="euler")
    assert (plain - video).abs().max() > 1e-3


def test_hierarchy_refuses_frame_laid_conditioning_on_spaced_keyframes(wan_i2v, text):
    from longvideo.nodes.common import NodeInputError
    from longvideo.nodes.comfy_models import FROM_NODE, LongVideoComfyModel
    from longvideo.nodes.hierarchy import LongVideoHierarchicalSampler

    model, _ = LongVideoComfyModel().adapt(wan_i2v, "simple", FROM_NODE)
    extras = {"concat_latent_image": torch.zeros(1, 16, 5, 8, 8), "concat_mask": torch.ones(1, 1, 5, 8, 8)}
    with pytest.raises(ValueError, match="LongVideoHierarchicalSampler: 'prompts': its 'concat_latent_image' is laid along "
                                         "the video's frames, .* spaced 2 apart"):
        LongVideoHierarchicalSampler().sample(model, [[[text[0], extras]]], [[text[1], extras]], "timeline", 64, 64, 3, 2,
                                              "replace", 1, 1, CFG, "euler", 2)
    with pytest.raises(NodeInputError, match="'keyframe_idxs' cannot be used by the LongVideo samplers: LTXVAddGuide"):
        LongVideoHierarchicalSampler().sample(model, [[[text[0], {"keyframe_idxs": torch.zeros(1, 3, 2)}]]],
                                              [[text[1], {}]], "timeline", 64, 64, 3, 2, "replace", 1, 1, CFG, "euler", 2)


def test_progress_and_cancel_go_through_comfyui(wan21, text):
    import comfy.model_management
    import comfy.utils

    from longvideo.nodes.comfy_models import FROM_NODE, LongVideoComfyModel
    from longvideo.nodes.continuation import LongVideoContinuationSampler

    model, _ = LongVideoComfyModel().adapt(wan21, "simple", FROM_NODE)
    positive, negative = [[text[0], {}]], [[text[1], {}]]
    reported = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: reported.append((value, total)))
    try:
        LongVideoContinuationSampler().sample(model, positive, negative, 64, 64, 3, 2, 1, 1, "replace", 1, 2, CFG, "euler")
        assert reported == [(i, 4) for i in range(1, 5)]  # 2 chunks x 2 steps on ComfyUI's ProgressBar
        comfy.model_management.interrupt_current_processing(True)
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            LongVideoContinuationSampler().sample(model, positive, negative, 64, 64, 3, 2, 1, 1, "replace", 1, 2, CFG, "euler")
    finally:
        comfy.model_management.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(previous)


# ---------------------------------------------------------------------------------------------------
# LTX-Video (128 channels, 32x, 8x in time; T5 attention_mask; known frames at per-token timestep 0) and
# HunyuanVideo (16 channels, 8x, 4x in time; CLIP-L pooled_output; ComfyUI keeps noise-masked frames clean)

DITS = {
    "ltxv": (comfy_env.save_tiny_ltxv, (1, 128, 3, 4, 4), LatentLayout(128, 32, 8)),
    "hunyuan_video": (comfy_env.save_tiny_hunyuan_video, (1, 16, 3, 8, 8), LatentLayout(16, 8, 4)),
}


@pytest.fixture(scope="module", params=list(DITS))
def dit(request, tmp_path_factory):
    """(ComfyUI's MODEL from UNETLoader, latent shape, positive, negative) for a tiny LTXV or HunyuanVideo file; the
    conditioning carries the extras their text encoders give (T5's / LLaVA's attention_mask with padding masked out,
    CLIP-L's pooled_output), without which their models do not run."""
    comfy_env.comfyui_or_skip()
    import folder_paths
    comfy_nodes = comfy_env.comfy_nodes()

    save, shape, layout = DITS[request.param]
    folder = tmp_path_factory.mktemp(f"{request.param}_models")
    save(str(folder / f"tiny_{request.param}.safetensors"))
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    (model,) = comfy_nodes.UNETLoader().load_unet(f"tiny_{request.param}.safetensors", "default")
    assert ComfyDenoiser(model).layout == layout
    generator = torch.Generator().manual_seed(17)

    def conditioning(tokens, padding):
        mask = torch.ones(1, tokens, dtype=torch.long)
        mask[:, tokens - padding:] = 0
        return [[torch.randn(1, tokens, 4096, generator=generator),
                 {"attention_mask": mask, "pooled_output": torch.randn(1, 768, generator=generator)}]]

    return model, shape, conditioning(6, 2), conditioning(4, 1), request.param


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_dit_clip_equals_comfyui_sampling(dit, sampler):
    import comfy.sample

    model, shape, positive, negative, _ = dit
    denoiser = ComfyDenoiser(model)
    ours = denoise(denoiser, TextGuidance.from_prompts(*prompts(denoiser, positive, negative), CFG), shape, steps=STEPS,
                   seed=3, scheduler=sampler)
    zeros = torch.zeros(shape)
    theirs = comfy_sample(model, comfy.sample.prepare_noise(zeros, 3), sampler, positive, negative, zeros, seed=3)
    assert torch.isfinite(ours).all() and ours.abs().mean() > 0.1
    assert (ours - theirs).abs().max() <= 1e-4
    # The extras matter: the attention mask changes the result (the model sees it through ComfyUI's conditioning).
    unmasked = [[positive[0][0], {**positive[0][1], "attention_mask": torch.ones_like(positive[0][1]["attention_mask"])}]]
    other = denoise(denoiser, TextGuidance.from_prompts(*prompts(denoiser, unmasked, negative), CFG), shape, steps=STEPS,
                    seed=3, scheduler=sampler)
    assert (other - ours).abs().max() > 1e-4


def test_dit_continuation_chunk_is_comfyui_with_noise_mask(dit):
    """A chunk is ComfyUI's sampling with the noise mask over its known frames, and they come back exact. ComfyUI's
    LTXV turns the mask into per-token timesteps (known frames at timestep 0, shown clean); its HunyuanVideo shows the
    known frames clean at the step's timestep; both are what replace does on these models."""
    import comfy.sample

    model, shape, positive, negative, kind = dit
    denoiser = ComfyDenoiser(model)
    batch, channels, frames, height, width = shape
    start = torch.randn(1, channels, 2, height, width, generator=torch.Generator().manual_seed(1))
    settings = continuation.ContinuationSettings(frames_per_chunk=frames, chunks=2, min_known=1, max_known=1)
    seen = []
    hook = model.model.diffusion_model.register_forward_pre_hook(lambda module, args: seen.append(args[1].detach().clone()))
    try:
        video = continuation.continue_video(denoiser, [TextGuidance.from_prompts(*prompts(denoiser, positive, negative), CFG)],
                                            settings, size=(1, height, width), steps=STEPS, seed=5, scheduler="euler",
                                            start=start)
    finally:
        hook.remove()
    assert video.shape[2] == 2 + 2 * (frames - 1)
    assert torch.equal(video[:, :, :2], start)
    if kind == "ltxv":  # per-token timesteps [batch, tokens, 1]: the known frame's tokens (the first h x w) at 0
        tokens = height * width
        assert all(t.shape[1] == 3 * tokens and (t[:, :tokens] == 0).all() and (t[:, tokens:] > 0).all() for t in seen)
    zeros = torch.zeros(1, channels, frames, height, width)
    latent = model.get_model_object("latent_format").process_out(zeros.clone())
    latent[:, :, :1] = video[:, :, frames: frames + 1]  # chunk 1 knows the last frame of chunk 0
    mask = torch.ones(1, 1, frames, height, width)
    mask[:, :, 0] = 0
    second = comfy_sample(model, comfy.sample.prepare_noise(zeros, continuation.chunk_seed(5, 1)), "euler", positive,
                          negative, latent, mask=mask)
    assert (video[:, :, frames + 1:] - second[:, :, 1:]).abs().max() <= 1e-4


def test_dit_hierarchical_keeps_parents_and_batches_segments(dit):
    model, shape, positive, negative, _ = dit
    denoiser = ComfyDenoiser(model)
    height, width = shape[3:]
    other = [[positive[0][0].flip(1), dict(positive[0][1])]]
    lines = [prompts(denoiser, c, negative)[0] for c in (positive, other)]
    negative_prompt = prompts(denoiser, positive, negative)[1]

    def run(depth, cap):
        plan = hierarchy.HierarchyPlan(3, depth)
        return hierarchy.sample_hierarchy(denoiser, plan, hierarchy.timeline_prompts(plan, lines), negative_prompt, CFG,
                                          hierarchy.HierarchySettings(batch_cap=cap), size=(height, width), steps=STEPS,
                                          seed=9, scheduler="euler")

    keyframes, batched, one_at_a_time = run(1, 1), run(2, 2), run(2, 1)
    assert batched.shape == (1, shape[1], 5, height, width)
    assert torch.equal(batched[:, :, [0, 2, 4]], keyframes)  # parents exact
    assert (batched - one_at_a_time).abs().max() <= 1e-4  # segments with different prompts, alone or side by side


def test_dit_refuses_guidance_before_sampling(dit):
    """ComfyUI's LTX-Video and HunyuanVideo blocks change their activations in place: no backward pass goes through
    them, so reconstruction guidance is refused by name before any step."""
    model, shape, positive, negative, kind = dit
    denoiser = ComfyDenoiser(model)
    seen = []
    hook = model.model.diffusion_model.register_forward_pre_hook(lambda module, args: seen.append(1))
    settings = continuation.ContinuationSettings(frames_per_chunk=shape[2], chunks=2, method="guidance")
    try:
        with pytest.raises(ValueError, match=f"'guidance' differentiates through the model, and ComfyUI's "
                                             f"{'LTXV' if kind == 'ltxv' else 'HunyuanVideo'} .* 'replace'"):
            continuation.continue_video(denoiser, [TextGuidance.from_prompts(*prompts(denoiser, positive, negative), CFG)],
                                        settings, size=(1, *shape[3:]), steps=STEPS, seed=5, scheduler="euler")
    finally:
        hook.remove()
    assert not seen


def test_dit_nodes_count_frames(dit):
    """The adapter reads the layout; the continuation node makes latent frames that decode to t x (n - 1) + 1."""
    from longvideo.models.comfy_model import ComfyVAE
    from longvideo.nodes.comfy_models import FROM_NODE, LongVideoComfyModel
    from longvideo.nodes.continuation import LongVideoContinuationSampler

    model, shape, positive, negative, kind = dit
    vae = StandInCausalVAE.like(shape[1], LATENT_LAYOUTS["LTXV" if kind == "ltxv" else "HunyuanVideo"])
    adapted, adapted_vae = LongVideoComfyModel().adapt(model, "simple", FROM_NODE, vae)
    size = shape[3] * adapted.downscale
    (latent,) = LongVideoContinuationSampler().sample(adapted, positive, negative, size, size, 3, 2, 1, 1, "replace", 1, 1,
                                                      CFG, "euler")
    assert latent["samples"].shape[2] == 3 + 2
    decoded = torch.cat(list(adapted_vae.decode_batches(latent["samples"], 2)))
    temporal = 8 if kind == "ltxv" else 4
    assert isinstance(adapted_vae, ComfyVAE) and adapted_vae.temporal == temporal
    assert len(decoded) == temporal * (5 - 1) + 1 == adapted.layout.pixel_frames(5)
