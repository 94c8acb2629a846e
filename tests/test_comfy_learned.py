"""Frame conditioning 'learned' on ComfyUI's own video models, and Wan 2.2 A14B's two experts, against the real ComfyUI.

The oracle of every equality is ComfyUI's own node chain on the same tiny model, frames, noise and sigmas, run inside
torch.inference_mode as ComfyUI's executor runs nodes (models loaded by UNETLoader under it too): VAEDecode of the
known latents, the model's conditioning node (WanFirstLastFrameToVideo, WanImageToVideo, WanVaceToVideo,
Wan22ImageToVideoLatent, LTXVImgToVideo + LTXVAddGuide, HunyuanImageToVideo), CLIPVisionEncode, then KSampler (or
the Wan 2.2 template's two KSamplerAdvanced). The Wan 2.1 VAE is ComfyUI's own class with seeded random weights; the
other layouts use a stand-in VAE with ComfyUI's VAE interface (their real VAEs are built only at full size).
"""

import logging
import re

import pytest
import torch

import comfy_env

from longvideo.models.comfy_conditioning import (HunyuanImage, LtxvGuides, Wan22Latent, WanImage, WanVace,
                                                 hand_off_for, known_runs)
from longvideo.models.comfy_model import ComfyDenoiser
from longvideo.models.denoiser import KnownFrames
from longvideo.sampling import continuation, hierarchy
from longvideo.sampling.denoise import TextGuidance, denoise
from longvideo.sampling.frame_conditioning import LearnedConditioning, ReplaceConditioning

pytestmark = pytest.mark.usefixtures("comfyui_session")

STEPS = 3
CFG = 4.0


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    """Load a tiny checkpoint through ComfyUI's UNETLoader inside torch.inference_mode, as ComfyUI's executor does."""
    comfy_env.comfyui_or_skip()
    import folder_paths
    comfy_nodes = comfy_env.comfy_nodes()

    folder = tmp_path_factory.mktemp("learned_models")
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    loaded = {}

    def load_model(name, save, **options):
        if name not in loaded:
            save(str(folder / f"{name}.safetensors"), **options)
            with torch.inference_mode():
                (loaded[name],) = comfy_nodes.UNETLoader().load_unet(f"{name}.safetensors", "default")
        return loaded[name]

    return load_model


@pytest.fixture(scope="module")
def wan_vae():
    """ComfyUI's Wan 2.1 VAE class (full size, seeded random weights), built under inference mode as VAELoader is."""
    comfy_env.comfyui_or_skip()
    import comfy.sd

    with torch.inference_mode():
        return comfy.sd.VAE(sd=comfy_env.random_wan21_vae_state())


@pytest.fixture(scope="module")
def text():
    generator = torch.Generator().manual_seed(7)
    return [[torch.randn(1, 6, 4096, generator=generator), {}]], [[torch.randn(1, 4, 4096, generator=generator), {}]]


def guidance_of(text, cfg=CFG):
    (positive, _), (negative, _) = text[0][0], text[1][0]
    return TextGuidance(positive, negative, cfg)


def latents(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def decoded(vae, frames):
    """VAEDecode of latent frames, as the IMAGE batch the node gives."""
    comfy_nodes = comfy_env.comfy_nodes()
    (images,) = comfy_nodes.VAEDecode().decode(vae, {"samples": frames})
    return images


def clip_vision_encode(clip_vision, image):
    comfy_nodes = comfy_env.comfy_nodes()
    return comfy_nodes.CLIPVisionEncode().encode(clip_vision, image, "center")[0]


def ksampler(model, seed, positive, negative, latent, sampler="euler", steps=STEPS, cfg=CFG):
    comfy_nodes = comfy_env.comfy_nodes()
    return comfy_nodes.KSampler().sample(model, seed, steps, cfg, sampler, "simple", positive, negative, latent)[0]["samples"]


def node(module, name):
    import importlib

    return getattr(importlib.import_module(module), name)


def outputs(result):
    return tuple(result.args if hasattr(result, "args") else result)


def wan(load, kind="t2v", seed=0, extra_in=20):
    return load(f"wan_{kind}_{seed}_{extra_in}", comfy_env.save_tiny_wan21, seed=seed, extra_in=extra_in, kind=kind)


# ---------------------------------------------------------------------------------------------------
# which conditioning each model class gets


def test_the_hand_off_follows_the_model_class(load):
    cases = {
        "t2v": (wan(load, extra_in=0), type(None), False),
        "image channels (Wan 2.2 A14B I2V, Fun InP)": (wan(load), WanImage, False),
        "Wan 2.1 I2V 14B": (wan(load, "i2v"), WanImage, True),
        "Wan 2.1 FLF2V 14B": (wan(load, "flf2v"), WanImage, True),
        "VACE": (wan(load, "vace", extra_in=0), WanVace, False),
        "Wan 2.2 TI2V 5B": (load("wan22", comfy_env.save_tiny_wan21, channels=48), Wan22Latent, False),
        "LTX-Video": (load("ltxv", comfy_env.save_tiny_ltxv), LtxvGuides, False),
        "HunyuanVideo": (load("hunyuan", comfy_env.save_tiny_hunyuan_video), type(None), False),
        "HunyuanVideo I2V": (load("hunyuan_i2v", comfy_env.save_tiny_hunyuan_video, in_channels=33), HunyuanImage, False),
    }
    for name, (model, kind, clip_vision) in cases.items():
        hand_off = hand_off_for(model)
        assert type(hand_off) is kind, name
        assert ComfyDenoiser(model).takes_known_frames == (hand_off is not None), name
        if hand_off is not None:
            assert hand_off.needs_clip_vision == clip_vision, name
    assert known_runs([0, 1, 4, 6, 7]) == [(0, 2), (4, 5), (6, 8)]
    infill, middle, start = [(0, 1), (2, 3)], [(0, 1), (2, 3), (4, 5)], [(0, 2)]
    for hand_off, takes in ((WanImage(False), (infill, start)), (WanVace(), (infill, middle, start)),
                            (Wan22Latent(), (start,)), (LtxvGuides(), (infill, middle, start)), (HunyuanImage(), (start,))):
        for runs in (infill, middle, start):
            frames = runs[-1][1] if runs is not start else 4
            if runs in takes:
                hand_off.check(runs, frames)
            else:
                with pytest.raises(ValueError, match=re.escape(f"({hand_off.nodes}) takes known frames")):
                    hand_off.check(runs, frames)


# ---------------------------------------------------------------------------------------------------
# Wan: first-last-frame infill, image-to-video and VACE continuation


def test_infill_segment_equals_wan_first_last_frame_to_video(load, wan_vae, text):
    """One hierarchical infill segment with 'learned' on a first-last-frame Wan is ComfyUI's VAEDecode of the two
    parents, CLIPVisionEncode of each, WanFirstLastFrameToVideo and KSampler."""
    model, clip_vision = wan(load, "flf2v"), comfy_env.StandInClipVision()
    shape = (1, 16, 3, 2, 2)
    ends = latents(1, 16, 2, 2, 2, seed=1)
    with torch.inference_mode():
        ours = denoise(ComfyDenoiser(model, vae=wan_vae, clip_vision=clip_vision), guidance_of(text), shape,
                       steps=STEPS, seed=4, scheduler="euler", conditioning=LearnedConditioning(KnownFrames([0, 2], ends)))
        start, end = decoded(wan_vae, ends[:, :, :1]), decoded(wan_vae, ends[:, :, 1:])
        positive, negative, latent = outputs(node("comfy_extras.nodes_wan", "WanFirstLastFrameToVideo").execute(
            text[0], text[1], wan_vae, 16, 16, 9, 1, start_image=start, end_image=end,
            clip_vision_start_image=clip_vision_encode(clip_vision, start),
            clip_vision_end_image=clip_vision_encode(clip_vision, end)))
        theirs = ksampler(model, 4, positive, negative, latent)
    assert torch.isfinite(ours).all() and ours.abs().mean() > 0.1
    assert (ours - theirs).abs().max() <= 1e-4
    # The known frames matter: other parents give another middle frame.
    with torch.inference_mode():
        other = denoise(ComfyDenoiser(model, vae=wan_vae, clip_vision=clip_vision), guidance_of(text), shape,
                        steps=STEPS, seed=4, scheduler="euler",
                        conditioning=LearnedConditioning(KnownFrames([0, 2], latents(1, 16, 2, 2, 2, seed=2))))
    assert (other[:, :, 1] - ours[:, :, 1]).abs().max() > 1e-3


def test_hierarchy_with_learned_keeps_parents_and_differs_from_replace(load, wan_vae, text):
    denoiser = ComfyDenoiser(wan(load, "flf2v"), vae=wan_vae, clip_vision=comfy_env.StandInClipVision())
    plan = hierarchy.HierarchyPlan(3, 2)

    def run(method, depth=2, cap=2):
        return hierarchy.sample_hierarchy(denoiser, hierarchy.HierarchyPlan(3, depth), [[text[0][0][0]]] * depth,
                                          text[1][0][0], CFG, hierarchy.HierarchySettings(batch_cap=cap, method=method),
                                          size=(2, 2), steps=STEPS, seed=9, scheduler="euler")

    with torch.inference_mode():
        keyframes, learned, one_at_a_time, replaced = run("learned", 1), run("learned"), run("learned", cap=1), run("replace")
    assert learned.shape == (1, 16, plan.frames, 2, 2) and torch.isfinite(learned).all()
    assert torch.equal(learned[:, :, [0, 2, 4]], keyframes)  # parents exact
    assert (learned - one_at_a_time).abs().max() <= 1e-4  # a segment is the same alone or beside another
    assert (learned - replaced).abs().max() > 1e-3


def test_infill_model_fills_between_keyframes_of_another_model(load, wan_vae, text):
    """Wan 2.2 A14B's split: text-to-video keyframes, first-last-frame infill by an image-to-video model
    (LongVideoHierarchicalSampler's infill_model); the keyframes are the text-to-video model's own."""
    from longvideo.nodes.common import NodeInputError
    from longvideo.nodes.hierarchy import LongVideoHierarchicalSampler

    keyframe_model = adapted(wan(load, extra_in=0), vae=wan_vae)
    infill_model = adapted(wan(load, "flf2v"), vae=wan_vae, clip_vision=comfy_env.StandInClipVision())
    sample = LongVideoHierarchicalSampler().sample
    (keyframes,) = run_node_inference(sample, keyframe_model, [text[0]], text[1], "timeline", 16, 16, 3, 1, "replace", 5,
                                      2, CFG, "euler", 2)
    (video,) = run_node_inference(sample, keyframe_model, [text[0]], text[1], "timeline", 16, 16, 3, 2, "learned", 5, 2,
                                  CFG, "euler", 2, infill_model=infill_model)
    assert torch.equal(video["samples"][:, :, [0, 2, 4]], keyframes["samples"])
    assert torch.isfinite(video["samples"]).all()
    with pytest.raises(NodeInputError, match="'infill_model' works on latents with latent channels 48 but 'model' on 16"):
        sample(keyframe_model, [text[0]], text[1], "timeline", 16, 16, 3, 2, "learned", 5, 2, CFG, "euler", 2,
               infill_model=adapted(load("wan22", comfy_env.save_tiny_wan21, channels=48)))


def continuation_oracle(model, vae, text, start, seed, build):
    """Chunk 0 of a continuation from `start` (3 latent frames, 2 carried over, chunks of 4): ComfyUI's VAEDecode of
    the video so far, its last 4 x (2 - 1) + 1 = 5 pixel frames handed to `build` (the model's conditioning node), and
    KSampler with the chunk's seed."""
    pixels = decoded(vae, start)[-5:]
    positive, negative, latent = build(pixels)
    return ksampler(model, continuation.chunk_seed(seed, 0), positive, negative, latent)


def run_continuation(denoiser, text, start, seed=11):
    settings = continuation.ContinuationSettings(frames_per_chunk=4, chunks=1, min_known=2, max_known=2, method="learned")
    return continuation.continue_video(denoiser, [guidance_of(text)], settings, size=(1, *start.shape[3:]), steps=STEPS,
                                       seed=seed, scheduler="euler", start=start)


def test_continuation_chunk_equals_wan_image_to_video(load, wan_vae, text):
    """The carried-over frames, decoded after the video frame before them, are WanImageToVideo's start image (with
    their CLIP vision) and the chunk is KSampler's."""
    model, clip_vision = wan(load, "i2v"), comfy_env.StandInClipVision()
    start = latents(1, 16, 3, 2, 2, seed=3)
    with torch.inference_mode():
        video = run_continuation(ComfyDenoiser(model, vae=wan_vae, clip_vision=clip_vision), text, start)

        def build(pixels):
            return outputs(node("comfy_extras.nodes_wan", "WanImageToVideo").execute(
                text[0], text[1], wan_vae, 16, 16, 13, 1, start_image=pixels,
                clip_vision_output=clip_vision_encode(clip_vision, pixels[-1:])))

        theirs = continuation_oracle(model, wan_vae, text, start, 11, build)
    assert video.shape == (1, 16, 3 + 2, 2, 2) and torch.equal(video[:, :, :3], start)
    assert (video[:, :, 3:] - theirs[:, :, 2:]).abs().max() <= 1e-4


def test_continuation_chunk_equals_wan_vace_to_video(load, wan_vae, text):
    model = wan(load, "vace", extra_in=0)
    start = latents(1, 16, 3, 2, 2, seed=3)
    with torch.inference_mode():
        video = run_continuation(ComfyDenoiser(model, vae=wan_vae), text, start)

        def build(pixels):
            control = torch.full((13, 16, 16, 3), 0.5)
            control[:5] = pixels
            masks = torch.ones(13, 16, 16)
            masks[:5] = 0
            positive, negative, latent, _ = outputs(node("comfy_extras.nodes_wan", "WanVaceToVideo").execute(
                text[0], text[1], wan_vae, 16, 16, 13, 1, 1.0, control_video=control, control_masks=masks))
            return positive, negative, latent

        theirs = continuation_oracle(model, wan_vae, text, start, 11, build)
    assert (video[:, :, 3:] - theirs[:, :, 2:]).abs().max() <= 1e-4


def test_vace_infill_segment_equals_wan_vace_to_video(load, wan_vae, text):
    """VACE takes known frames anywhere: an infill segment's two parents as its control video's first and last pixel
    frames, masked, the rest grey."""
    model = wan(load, "vace", extra_in=0)
    ends = latents(1, 16, 2, 2, 2, seed=1)
    with torch.inference_mode():
        ours = denoise(ComfyDenoiser(model, vae=wan_vae), guidance_of(text), (1, 16, 3, 2, 2), steps=STEPS, seed=4,
                       scheduler="euler", conditioning=LearnedConditioning(KnownFrames([0, 2], ends)))
        control = torch.full((9, 16, 16, 3), 0.5)
        control[0], control[8] = decoded(wan_vae, ends[:, :, :1])[0], decoded(wan_vae, ends[:, :, 1:])[0]
        masks = torch.ones(9, 16, 16)
        masks[[0, 8]] = 0
        positive, negative, latent, _ = outputs(node("comfy_extras.nodes_wan", "WanVaceToVideo").execute(
            text[0], text[1], wan_vae, 16, 16, 9, 1, 1.0, control_video=control, control_masks=masks))
        theirs = ksampler(model, 4, positive, negative, latent)
    assert (ours - theirs).abs().max() <= 1e-4


def test_learned_continuation_replaces_the_users_start_image_after_the_first_chunk(load, wan_vae, text):
    """WanImageToVideo's start image (in the prompt) makes chunk 0; later chunks get the frames carried over instead
    of being told that nothing is known."""
    model = wan(load)  # Wan 2.2 A14B I2V's layout: image channels, no CLIP vision
    with torch.inference_mode():
        image = decoded(wan_vae, latents(1, 16, 1, 2, 2, seed=5))
        positive, negative, _ = outputs(node("comfy_extras.nodes_wan", "WanImageToVideo").execute(
            text[0], text[1], wan_vae, 16, 16, 4 * (6 - 1) + 1, 1, start_image=image))
        denoiser = ComfyDenoiser(model, vae=wan_vae)
        from longvideo.nodes.common import conditioning_prompt

        prompt = TextGuidance.from_prompts(conditioning_prompt(positive, "test", "positive", denoiser),
                                           conditioning_prompt(negative, "test", "negative", denoiser), CFG)
        settings = continuation.ContinuationSettings(4, 2, 2, 2, "learned")
        video = continuation.continue_video(denoiser, [prompt], settings, size=(1, 2, 2), steps=STEPS, seed=11,
                                            scheduler="euler")
        cut = {key: positive[0][1][key][:, :, :4] for key in ("concat_latent_image", "concat_mask")}
        first = ksampler(model, continuation.chunk_seed(11, 0), [[text[0][0][0], cut]], [[text[1][0][0], cut]],
                         {"samples": torch.zeros(1, 16, 4, 2, 2)})
        pixels = decoded(wan_vae, video[:, :, :4])[-5:]
        positive, negative, latent = outputs(node("comfy_extras.nodes_wan", "WanImageToVideo").execute(
            text[0], text[1], wan_vae, 16, 16, 13, 1, start_image=pixels))
        second = ksampler(model, continuation.chunk_seed(11, 1), positive, negative, latent)
    assert (video[:, :, :4] - first).abs().max() <= 1e-4
    assert (video[:, :, 4:] - second[:, :, 2:]).abs().max() <= 1e-4


# ---------------------------------------------------------------------------------------------------
# Wan 2.2 A14B: two experts


def shifted(model, shift=8.0):
    """The model as the Wan 2.2 template patches each expert (ModelSamplingSD3, shift 8)."""
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    return ModelSamplingSD3().patch(model, shift)[0]


def two_ksamplers(high, low, seed, positive, negative, latent, split, sampler="euler", steps=4, cfg=CFG):
    """The Wan 2.2 A14B template: KSamplerAdvanced on the high-noise expert for the first `split` steps returning its
    leftover noise, then on the low-noise expert without new noise."""
    comfy_nodes = comfy_env.comfy_nodes()
    advanced = comfy_nodes.KSamplerAdvanced()
    (mid,) = advanced.sample(high, "enable", seed, steps, cfg, sampler, "simple", positive, negative, latent, 0, split,
                             "enable")
    (out,) = advanced.sample(low, "disable", seed, steps, cfg, sampler, "simple", positive, negative, mid, split, 10000,
                             "disable")
    return out["samples"]


@pytest.mark.parametrize("sampler", ["euler", "uni_pc"])
def test_a14b_clip_equals_the_two_ksampler_advanced_chain(load, text, sampler):
    high, low = shifted(wan(load, seed=1, extra_in=0)), shifted(wan(load, seed=2, extra_in=0))
    shape = (1, 16, 3, 2, 2)
    with torch.inference_mode():
        by_step = denoise(ComfyDenoiser(high, low_noise=low, switch_step=2), guidance_of(text), shape, steps=4, seed=3,
                          scheduler="unipc" if sampler == "uni_pc" else sampler)
        by_boundary = ComfyDenoiser(high, low_noise=low)
        sigmas = by_boundary.sigmas(4, sampler)
        split = int((sigmas[:-1] >= 0.875).sum())
        boundary = denoise(by_boundary, guidance_of(text), shape, steps=4, seed=3, scheduler=sampler)
        latent = {"samples": torch.zeros(shape)}
        chain = two_ksamplers(high, low, 3, text[0], text[1], latent, 2, sampler)
        boundary_chain = two_ksamplers(high, low, 3, text[0], text[1], latent, split, sampler)
        only_high = ksampler(high, 3, text[0], text[1], latent, sampler, steps=4)
    assert 0 < split < 4 and by_boundary.experts.boundary == 0.875
    assert (by_step - chain).abs().max() <= 1e-4
    assert (boundary - boundary_chain).abs().max() <= 1e-4
    assert (by_step - only_high).abs().max() > 1e-3  # the low-noise expert did sample


def test_a14b_experts_keep_their_own_lora_and_run_at_cfg_1(load, text):
    """A LoRA on the low-noise expert only changes the result; a 4-step run at CFG 1 (distilled LoRAs) runs one pass
    per step."""
    high, low = shifted(wan(load, seed=1, extra_in=0)), shifted(wan(load, seed=2, extra_in=0))
    patched = low.clone()
    key = "diffusion_model.head.head.weight"
    weight = patched.model.state_dict()[key]
    patched.add_patches({key: (torch.full_like(weight, 0.05),)}, 1.0)
    shape = (1, 16, 3, 2, 2)
    calls = []
    hook = high.model.diffusion_model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        with torch.inference_mode():
            plain = denoise(ComfyDenoiser(high, low_noise=low, switch_step=2), guidance_of(text, 1.0), shape, steps=4,
                            seed=3, scheduler="euler")
            with_lora = denoise(ComfyDenoiser(high, low_noise=patched, switch_step=2), guidance_of(text, 1.0), shape,
                                steps=4, seed=3, scheduler="euler")
    finally:
        hook.remove()
    assert calls and set(calls) == {1}  # CFG 1: no unconditional pass
    assert (plain - with_lora).abs().max() > 1e-3
    assert torch.isfinite(with_lora).all()


def test_a14b_image_to_video_equals_wan_image_to_video_and_the_chain(load, wan_vae, text):
    """Wan 2.2 A14B image-to-video (image channels, no CLIP vision): the known frame as WanImageToVideo's start image
    and both experts as the template chains them, switching at Wan's image-to-video boundary 0.9."""
    high, low = shifted(wan(load, seed=1)), shifted(wan(load, seed=2))
    known = latents(1, 16, 1, 2, 2, seed=6)
    shape = (1, 16, 3, 2, 2)
    with torch.inference_mode():
        denoiser = ComfyDenoiser(high, low_noise=low, vae=wan_vae)
        ours = denoise(denoiser, guidance_of(text), shape, steps=4, seed=3, scheduler="euler",
                       conditioning=LearnedConditioning(KnownFrames([0], known)))
        split = int((denoiser.sigmas(4, "euler")[:-1] >= 0.9).sum())
        positive, negative, latent = outputs(node("comfy_extras.nodes_wan", "WanImageToVideo").execute(
            text[0], text[1], wan_vae, 16, 16, 9, 1, start_image=decoded(wan_vae, known)))
        theirs = two_ksamplers(high, low, 3, positive, negative, latent, split)
    assert denoiser.experts.boundary == 0.9 and 0 < split < 4
    assert (ours - theirs).abs().max() <= 1e-4


def test_a14b_kept_frames_go_through_the_switch(load, text):
    """With a noise mask (replace), the low-noise expert sees the kept frames as one run would: two stages of the same
    model equal one run. The template's plain chain loses them (its second stage re-noises the first stage's noisy
    output with zero noise), which is why the pack hands the second stage the run's own noise."""
    model = shifted(wan(load, seed=1, extra_in=0))
    shape = (1, 16, 3, 2, 2)
    known = KnownFrames([0], latents(1, 16, 1, 2, 2, seed=8))
    with torch.inference_mode():
        one = denoise(ComfyDenoiser(model), guidance_of(text), shape, steps=4, seed=3, scheduler="euler",
                      conditioning=ReplaceConditioning(known))
        two = denoise(ComfyDenoiser(model, low_noise=model, switch_step=2), guidance_of(text), shape, steps=4, seed=3,
                      scheduler="euler", conditioning=ReplaceConditioning(known))
        latent = model.get_model_object("latent_format").process_out(torch.zeros(shape))
        latent[:, :, :1] = known.latents
        mask = torch.ones(1, 1, 3, 2, 2)
        mask[:, :, 0] = 0
        chain = two_ksamplers(model, model, 3, text[0], text[1], {"samples": latent, "noise_mask": mask}, 2)
    assert (one - two).abs().max() <= 1e-4
    assert (chain[:, :, 1:] - one[:, :, 1:]).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------------
# Wan 2.2 TI2V 5B, LTX-Video, HunyuanVideo image-to-video (stand-in VAEs of their layouts)


def dit_text(seed=17):
    """T5 / LLaVA conditioning with an attention mask and CLIP-L's pooled output (LTX-Video and HunyuanVideo need them)."""
    generator = torch.Generator().manual_seed(seed)

    def one(tokens, padding):
        mask = torch.ones(1, tokens, dtype=torch.long)
        mask[:, tokens - padding :] = 0
        return [[torch.randn(1, tokens, 4096, generator=generator),
                 {"attention_mask": mask, "pooled_output": torch.randn(1, 768, generator=generator)}]]

    return one(6, 2), one(4, 1)


def native_guidance(denoiser, positive, negative):
    from longvideo.nodes.common import conditioning_prompt

    return TextGuidance.from_prompts(conditioning_prompt(positive, "test", "positive", denoiser),
                                     conditioning_prompt(negative, "test", "negative", denoiser), CFG)


def learned_chunk(model, vae, positive, negative, start):
    """A continuation chunk of 4 latent frames after `start`, 2 carried over by the model's own conditioning, with
    ComfyUI CONDITIONING lists as prompts (what DiT prompts carry: attention masks, pooled outputs)."""
    denoiser = ComfyDenoiser(model, vae=vae)
    settings = continuation.ContinuationSettings(frames_per_chunk=4, chunks=1, min_known=2, max_known=2, method="learned")
    return continuation.continue_video(denoiser, [native_guidance(denoiser, positive, negative)], settings,
                                       size=(1, 2, 2), steps=STEPS, seed=11, scheduler="euler", start=start)


def test_wan22_ti2v_continuation_equals_wan22_image_to_video_latent(load, text):
    model = load("wan22", comfy_env.save_tiny_wan21, channels=48)
    vae = comfy_env.StandInVideoVAE(48, 16, 4)
    start = latents(1, 48, 2, 2, 2, seed=2)
    with torch.inference_mode():
        video = run_continuation(ComfyDenoiser(model, vae=vae), text, start)
        pixels = decoded(vae, start)[-5:]
        (latent,) = outputs(node("comfy_extras.nodes_wan", "Wan22ImageToVideoLatent").execute(vae, 32, 32, 13, 1, pixels))
        theirs = ksampler(model, continuation.chunk_seed(11, 0), text[0], text[1], latent)
    assert (video[:, :, 2:] - theirs[:, :, 2:]).abs().max() <= 1e-4


def test_ltxv_infill_equals_ltxv_img_to_video_and_add_guide(load):
    """LTX-Video: the first frame into the latent (LTXVImgToVideo), the last as a keyframe guide (LTXVAddGuide at its
    pixel frame), sampled with the same noise (guide frames appended after the clip's) and cropped."""
    import comfy.sample

    model, vae = load("ltxv", comfy_env.save_tiny_ltxv), comfy_env.StandInVideoVAE(128, 32, 8)
    positive, negative = dit_text()
    shape = (1, 128, 3, 2, 2)
    ends = latents(1, 128, 2, 2, 2, seed=4)
    noise = latents(*shape, seed=5)
    with torch.inference_mode():
        denoiser = ComfyDenoiser(model, vae=vae)
        ours = denoise(denoiser, native_guidance(denoiser, positive, negative), shape, steps=STEPS, seed=0,
                       scheduler="euler", noise=noise, conditioning=LearnedConditioning(KnownFrames([0, 2], ends)))
        first, last = decoded(vae, ends[:, :, :1]), decoded(vae, ends[:, :, 1:])
        p, n, latent = outputs(node("comfy_extras.nodes_lt", "LTXVImgToVideo").execute(
            positive, negative, first, vae, 64, 64, 17, 1, 1.0))
        p, n, latent = outputs(node("comfy_extras.nodes_lt", "LTXVAddGuide").execute(p, n, vae, latent, last, 16, 1.0))
        extra = latent["samples"].shape[2] - 3
        theirs = comfy.sample.sample(model, torch.cat([noise, torch.zeros(1, 128, extra, 2, 2)], dim=2), STEPS, CFG,
                                     "euler", "simple", p, n, latent["samples"], noise_mask=latent["noise_mask"],
                                     disable_pbar=True, seed=0)
    assert extra == 1 and "keyframe_idxs" in p[0][1]
    assert (ours - theirs[:, :, :3]).abs().max() <= 1e-4


def test_ltxv_continuation_equals_ltxv_img_to_video(load):
    """LTX-Video continuation: the carried-over frames (8 x (2 - 1) + 1 pixel frames) go into the latent by
    LTXVImgToVideo, clean at timestep 0 by its noise mask."""
    model, vae = load("ltxv", comfy_env.save_tiny_ltxv), comfy_env.StandInVideoVAE(128, 32, 8)
    positive, negative = dit_text()
    start = latents(1, 128, 3, 2, 2, seed=9)
    with torch.inference_mode():
        video = learned_chunk(model, vae, positive, negative, start)
        pixels = decoded(vae, start)[-9:]
        p, n, latent = outputs(node("comfy_extras.nodes_lt", "LTXVImgToVideo").execute(
            positive, negative, pixels, vae, 64, 64, 25, 1, 1.0))
        theirs = ksampler(model, continuation.chunk_seed(11, 0), p, n, latent)
    assert (video[:, :, 3:] - theirs[:, :, 2:]).abs().max() <= 1e-4


def test_hunyuan_i2v_continuation_equals_hunyuan_image_to_video(load):
    model, vae = load("hunyuan_i2v", comfy_env.save_tiny_hunyuan_video, in_channels=33), comfy_env.StandInVideoVAE(16, 8, 4)
    positive, negative = dit_text()
    start = latents(1, 16, 3, 2, 2, seed=9)
    with torch.inference_mode():
        video = learned_chunk(model, vae, positive, negative, start)
        pixels = decoded(vae, start)[-5:]
        p, latent = node("comfy_extras.nodes_hunyuan", "HunyuanImageToVideo")().encode(
            positive, vae, 16, 16, 13, 1, "v1 (concat)", start_image=pixels)
        theirs = ksampler(model, continuation.chunk_seed(11, 0), p, negative, latent)
    assert (video[:, :, 3:] - theirs[:, :, 2:]).abs().max() <= 1e-4


# ---------------------------------------------------------------------------------------------------
# refused before anything runs, through the nodes as ComfyUI executes them


@pytest.fixture
def calls():
    """Records every call of a diffusion model given to `watch` (none may happen before a refusal)."""
    seen, hooks = [], []

    def watch(model):
        hooks.append(model.model.diffusion_model.register_forward_pre_hook(lambda module, args: seen.append(1)))
        return model

    yield seen, watch
    for hook in hooks:
        hook.remove()


def adapted(model, **options):
    from longvideo.nodes.comfy_models import FROM_NODE, LongVideoComfyModel

    with torch.inference_mode():
        return LongVideoComfyModel().adapt(model, "simple", FROM_NODE, **options)[0]


def run_node_inference(function, *args, **kwargs):
    with torch.inference_mode():
        return function(*args, **kwargs)


def test_learned_refusals_name_the_model_before_sampling(load, wan_vae, text, calls):
    from longvideo.nodes.common import NodeInputError
    from longvideo.nodes.continuation import LongVideoContinuationSampler
    from longvideo.nodes.hierarchy import LongVideoHierarchicalSampler
    from longvideo.nodes.interpolation import LongVideoLatentInterpolate

    seen, watch = calls
    continuation_node, hierarchy_node = LongVideoContinuationSampler().sample, LongVideoHierarchicalSampler().sample
    t2v = adapted(watch(wan(load, extra_in=0)), vae=wan_vae)
    with pytest.raises(NodeInputError, match=r"LongVideoContinuationSampler: frame conditioning 'learned' needs a model "
                                             r"with its own image conditioning, and this one \(WAN21 \(16 input"):
        run_node_inference(continuation_node, t2v, *text, 16, 16, 3, 2, 1, 1, "learned", 1, 2, CFG, "euler")
    no_vae = adapted(watch(wan(load)))
    with pytest.raises(NodeInputError, match="connect the model's VAE to LongVideoComfyModel's 'vae'"):
        run_node_inference(continuation_node, no_vae, *text, 16, 16, 3, 2, 1, 1, "learned", 1, 2, CFG, "euler")
    no_clip_vision = adapted(watch(wan(load, "i2v")), vae=wan_vae)
    with pytest.raises(NodeInputError, match="CLIP vision embedding .* connect Load CLIP Vision"):
        run_node_inference(hierarchy_node, no_clip_vision, [text[0]], text[1], "timeline", 16, 16, 3, 2, "learned", 1, 2,
                           CFG, "euler", 2)
    ti2v = adapted(watch(load("wan22", comfy_env.save_tiny_wan21, channels=48)), vae=comfy_env.StandInVideoVAE(48, 16, 4))
    with pytest.raises(NodeInputError, match=r"LongVideoHierarchicalSampler: this model's own conditioning "
                                             r"\(Wan22ImageToVideoLatent\) takes known frames at the start of a clip "
                                             r"only; this clip knows latent frames 0, 2 of 3"):
        run_node_inference(hierarchy_node, ti2v, [text[0]], text[1], "timeline", 32, 32, 3, 2, "learned", 1, 2, CFG,
                           "euler", 2)
    flf = adapted(watch(wan(load, "flf2v")), vae=wan_vae, clip_vision=comfy_env.StandInClipVision())
    with pytest.raises(NodeInputError, match="at the start and at the end of a clip only; this clip knows latent frames "
                                             "0, 2, 4 of 5: set window to 2"):
        run_node_inference(LongVideoLatentInterpolate().interpolate, flf, *text, {"samples": torch.zeros(1, 16, 3, 2, 2)},
                           2, 1, "learned", 1, 2, CFG, "euler", window=17, overlap=1)
    with pytest.raises(NodeInputError, match="frame_guidance 2.0 is for the pack's own models"):
        run_node_inference(hierarchy_node, flf, [text[0]], text[1], "timeline", 16, 16, 3, 2, "learned", 1, 2, CFG,
                           "euler", 2, frame_guidance=2.0)
    for run in (lambda: continuation_node(t2v, *text, 16, 16, 3, 2, 1, 1, "resample", 1, 2, CFG, "euler"),
                lambda: hierarchy_node(t2v, [text[0]], text[1], "timeline", 16, 16, 3, 2, "resample", 1, 2, CFG, "euler", 2)):
        with pytest.raises(NodeInputError, match="'resample' is not available for ComfyUI models \\(WAN21"):
            run_node_inference(run)
    assert not seen  # nothing was sampled before any refusal


def test_nodes_drive_learned_and_say_which_conditioning(load, wan_vae, text, caplog):
    from longvideo.nodes.continuation import LongVideoContinuationSampler
    from longvideo.nodes.hierarchy import LongVideoHierarchicalSampler
    from longvideo.nodes.interpolation import LongVideoLatentInterpolate

    flf = adapted(wan(load, "flf2v"), vae=wan_vae, clip_vision=comfy_env.StandInClipVision())
    with caplog.at_level(logging.INFO, logger="longvideo.models.comfy_model"):
        (video,) = run_node_inference(LongVideoContinuationSampler().sample, flf, *text, 16, 16, 3, 2, 1, 1, "learned", 1,
                                      2, CFG, "euler")
        (infilled,) = run_node_inference(LongVideoHierarchicalSampler().sample, flf, [text[0]], text[1], "timeline", 16,
                                         16, 3, 2, "learned", 1, 2, CFG, "euler", 2)
        (between,) = run_node_inference(LongVideoLatentInterpolate().interpolate, flf, *text, {"samples": video["samples"]},
                                        2, 1, "learned", 1, 2, CFG, "euler", window=2, overlap=1)
    assert video["samples"].shape == (1, 16, 3 + 2, 2, 2) and infilled["samples"].shape == (1, 16, 5, 2, 2)
    assert between["samples"].shape == (1, 16, 9, 2, 2) and torch.equal(between["samples"][:, :, ::2], video["samples"])
    assert all(torch.isfinite(v["samples"]).all() for v in (video, infilled, between))
    assert "frame conditioning 'learned' on WAN21 (36 input channels): WanImageToVideo / WanFirstLastFrameToVideo" in caplog.text
