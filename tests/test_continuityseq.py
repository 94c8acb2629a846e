"""ContinuitySeq checkpoints: strict loading of the original key layout, the two-stream UNet's behaviour (F = 1,
padding mask, initialisation), its Denoiser, and continuation with frame conditioning 'learned' through the node."""

import importlib
import json
import os
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from longvideo.models.continuityseq import ConditioningBlock, ContinuitySeqDenoiser, ContinuitySeqUNet
from longvideo.models.denoiser import KnownFrames
from longvideo.models.loader import ModelLoadError
from longvideo.nodes.common import NodeInputError
from longvideo.nodes.conditioning import LongVideoTextEncode
from longvideo.nodes.continuation import LongVideoContinuationSampler
from longvideo.nodes.loaders import LongVideoModelLoader
from longvideo.nodes.sampler import LongVideoSampler
from longvideo.sampling import continuation
from tiny_models import CONTINUITYSEQ_CONFIG, continuityseq_layout, save_tiny_continuityseq

UNET_FILE = os.path.join("unet", "diffusion_pytorch_model.safetensors")
ARGUMENTS = {k: v for k, v in CONTINUITYSEQ_CONFIG.items() if not k.startswith("_")}


def load(folder, **options):
    return LongVideoModelLoader().load(model="", dtype="fp32", model_path=str(folder), **options)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_continuityseq(str(tmp_path_factory.mktemp("models") / "tiny-continuityseq"))


@pytest.fixture(scope="module")
def tiny(folder):
    return load(folder)


def inputs(frames, conditioning_frames, seed=0, batch=2, size=(8, 8)):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, frames, *size, generator=generator)
    conditioning = torch.randn(batch, 4, conditioning_frames, *size, generator=generator)
    context = torch.randn(batch, 5, CONTINUITYSEQ_CONFIG["cross_attention_dim"], generator=generator)
    return sample, conditioning, context


def run(unet, sample, conditioning, context, t=500, **options):
    with torch.no_grad():
        return unet(sample, conditioning, torch.tensor(t), context, **options)


def copy_with(folder, tmp_path, edit_state=None, edit_config=None, name="edited"):
    target = tmp_path / name
    shutil.copytree(folder, target)
    if edit_state is not None:
        state = load_file(target / UNET_FILE)
        edit_state(state)
        save_file(state, target / UNET_FILE)
    if edit_config is not None:
        config = json.loads((target / "unet" / "config.json").read_text())
        edit_config(config)
        (target / "unet" / "config.json").write_text(json.dumps(config))
    return target


# ---------------------------------------------------------------------------------------------------
# loading


def test_original_key_layout_loads_strictly_into_our_unet(folder, tiny):
    model = tiny[0]
    assert isinstance(model, ContinuitySeqDenoiser) and model.takes_known_frames and model.requires_known_frames
    assert not model.corrected_padding_mask
    loaded = model.unet.state_dict()
    saved = load_file(os.path.join(folder, UNET_FILE))
    assert set(loaded) == set(saved) == set(continuityseq_layout(CONTINUITYSEQ_CONFIG))
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)
    assert not any(p.is_meta for p in model.unet.parameters())
    assert model.latent_channels == 4 and model.context_width == CONTINUITYSEQ_CONFIG["cross_attention_dim"]


def test_bin_weights_and_the_corrected_mask_option(tmp_path, tiny):
    folder = save_tiny_continuityseq(str(tmp_path / "bin"), safe_serialization=False)
    assert os.path.exists(os.path.join(folder, "unet", "diffusion_pytorch_model.bin"))
    model = load(folder, corrected_padding_mask=True)[0]
    assert model.corrected_padding_mask
    reference = tiny[0].unet.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in model.unet.state_dict().items())


def test_fp16_loading_casts_the_weights(folder):
    model = LongVideoModelLoader().load(model="", dtype="fp16", model_path=folder)[0]
    assert model.unet.dtype == torch.float16


def test_missing_and_unexpected_keys_are_named(folder, tmp_path):
    def edit(state):
        del state["mid_block.conditioning_attentions.0.cond_proj_in.weight"]
        state["mid_block.conditioning_attentions.0.extra.weight"] = torch.zeros(1)

    with pytest.raises(ModelLoadError, match=r"missing keys \(1\): mid_block\.conditioning_attentions\.0\.cond_proj_in\.weight"
                                             r".*unexpected keys \(1\): mid_block\.conditioning_attentions\.0\.extra\.weight"):
        load(copy_with(folder, tmp_path, edit_state=edit))


def test_wrong_shapes_are_named(folder, tmp_path):
    with pytest.raises(ModelLoadError, match=r"shape differs from config.json \(8\):.*conv_out\.spatial_conv\.weight"):
        load(copy_with(folder, tmp_path, edit_config=lambda config: config.update(out_channels=8)))


def test_use_conditioning_norm_is_checked_against_the_weights(folder, tmp_path):
    with pytest.raises(ModelLoadError, match=r"use_conditioning_norm=false but the weights have conditioning_block.*"
                                             r"\"use_conditioning_norm\": true"):
        load(copy_with(folder, tmp_path, edit_config=lambda config: config.update(use_conditioning_norm=False)))

    def strip_blocks(state):
        for key in [k for k in state if ".conditioning_block." in k]:
            del state[key]

    with pytest.raises(ModelLoadError, match=r"use_conditioning_norm=true \(by default, it is not set\) but the weights have no"):
        load(copy_with(folder, tmp_path, strip_blocks, lambda config: config.pop("use_conditioning_norm"), "stripped"))


def test_a_checkpoint_without_conditioning_norm_loads(tmp_path):
    config = dict(CONTINUITYSEQ_CONFIG, use_conditioning_norm=False)
    model = load(save_tiny_continuityseq(str(tmp_path / "no-norm"), config=config))[0]
    assert not any(".conditioning_block." in key for key in model.unet.state_dict())
    assert set(model.unet.state_dict()) == set(continuityseq_layout(config))


def test_plain_unet3d_folders_still_load_as_plain_models(tiny_model_folder):
    model = load(tiny_model_folder)[0]
    assert type(model).__name__ == "UNet3DDenoiser" and not model.takes_known_frames


# ---------------------------------------------------------------------------------------------------
# the network


def test_one_frame_ignores_the_conditioning(tiny):
    unet = tiny[0].unet
    sample, conditioning, context = inputs(frames=1, conditioning_frames=3)
    other = torch.randn_like(conditioning) * 3
    assert torch.equal(run(unet, sample, conditioning, context), run(unet, sample, other, context))
    assert torch.equal(run(unet, sample, conditioning, context), run(unet, sample, conditioning[:, :, :1], context))
    two, conditioning, context = inputs(frames=2, conditioning_frames=3)
    assert not torch.allclose(run(unet, two, conditioning, context), run(unet, two, other, context))


def capture_masks(unet):
    masks = []

    def hook(module, args, kwargs):
        masks.append(kwargs["encoder_attention_mask"])

    handles = [attention.transformer_blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
               for attention in unet.modules() if type(attention).__name__ == "ConditioningAttention"]
    return masks, handles


def test_padding_mask_is_inverted_by_default_and_corrected_on_request(tiny):
    unet = tiny[0].unet
    sample, conditioning, context = inputs(frames=6, conditioning_frames=2)
    masks, handles = capture_masks(unet)
    try:
        inverted = run(unet, sample, conditioning, context)
        first = len(masks)
        corrected = run(unet, sample, conditioning, context, corrected_padding_mask=True)
    finally:
        for handle in handles:
            handle.remove()
    assert first == 1 + 1 + 2  # conditioning attentions: down block (1 layer), mid block, up block (2 layers)
    padding, content = torch.tensor([0.0] * 4), torch.tensor([-10000.0] * 2)
    for mask in masks[:first]:  # the checkpoint's mask: content frames masked, zero padding attended
        assert mask.shape[1:] == (1, 6) and torch.equal(mask[0, 0], torch.cat([padding, content]))
    for mask in masks[first:]:
        assert torch.equal(mask[0, 0], torch.cat([content[:1].expand(4), padding[:2]]))
    assert not torch.allclose(inverted, corrected, atol=1e-4)

    for conditioning_frames in (6, 9):  # no padding, no mask: both settings are the same network
        sample, conditioning, context = inputs(frames=6, conditioning_frames=conditioning_frames, seed=conditioning_frames)
        assert torch.equal(run(unet, sample, conditioning, context),
                           run(unet, sample, conditioning, context, corrected_padding_mask=True))


def test_every_conditioning_frame_counts_and_the_last_one_also_through_the_conditioning_blocks(tiny):
    unet = tiny[0].unet
    sample, conditioning, context = inputs(frames=4, conditioning_frames=3)
    reference = run(unet, sample, conditioning, context)
    for frame in range(3):
        changed = conditioning.clone()
        changed[:, :, frame] += 1
        assert not torch.allclose(run(unet, sample, changed, context), reference, atol=1e-4)


def test_fresh_conditioning_pieces_start_as_in_the_original():
    unet = ContinuitySeqUNet(**ARGUMENTS)
    blocks = [m for m in unet.modules() if isinstance(m, ConditioningBlock)]
    assert len(blocks) == sum(".conditioning_block.conditioning_norm.gamma.0.weight" in k for k in unet.state_dict())
    for block in blocks:
        gamma, beta = block.conditioning_norm.gamma[0], block.conditioning_norm.beta[0]
        assert torch.count_nonzero(gamma.weight) == torch.count_nonzero(beta.weight) == torch.count_nonzero(beta.bias) == 0
        assert torch.equal(gamma.bias, torch.ones_like(gamma.bias))
    # So a fresh block adds SiLU(1) times the LAST conditioning frame to every frame: h + SiLU(1) * c_last.
    block = blocks[0]
    channels = block.conditioning_norm.gamma[0].in_features
    hidden = torch.randn(2 * 3, channels, 4, 4)
    conditioning = torch.randn(2 * 5, channels, 4, 4)
    last = conditioning.reshape(2, 5, channels, 4, 4)[:, -1:].expand(2, 3, channels, 4, 4).reshape(6, channels, 4, 4)
    expected = hidden + F.silu(torch.tensor(1.0)) * last
    assert torch.allclose(block(hidden, conditioning, frames=3), expected, atol=1e-6)
    assert all(torch.count_nonzero(m.conv4[-1].weight) == 0 for m in unet.modules() if type(m).__name__ == "TemporalConvLayer")


def test_odd_latent_sizes_forward_the_upsample_size(tiny):
    sample, conditioning, context = inputs(frames=3, conditioning_frames=1, size=(7, 5))
    assert run(tiny[0].unet, sample, conditioning, context).shape == sample.shape


# ---------------------------------------------------------------------------------------------------
# the denoiser


def test_denoiser_predicts_the_frames_after_the_known_prefix(tiny):
    model = tiny[0]
    latents, known, context = inputs(frames=5, conditioning_frames=2, batch=2)
    prediction = model(latents, torch.tensor(700), context, known=KnownFrames([0, 1], known[:1]))
    expected = run(model.unet, latents[:, :, 2:], known[:1].expand(2, -1, -1, -1, -1), context, t=700)
    assert prediction.shape == latents.shape
    assert torch.count_nonzero(prediction[:, :, :2]) == 0
    assert torch.equal(prediction[:, :, 2:], expected)


def test_denoiser_errors_name_the_problem(tiny):
    model = tiny[0]
    latents, known, context = inputs(frames=5, conditioning_frames=2)
    with pytest.raises(ValueError, match=r"known frame indices must be 0\.\.1, got \[1, 2\]"):
        model(latents, torch.tensor(1), context, known=KnownFrames([1, 2], known))
    with pytest.raises(ValueError, match="continues known frames"):
        model(latents, torch.tensor(1), context)
    with pytest.raises(ValueError, match="at least one new frame"):
        model(latents[:, :, :2], torch.tensor(1), context, known=KnownFrames([0, 1], known))


def test_temporal_attention_scopes_apply_to_its_temporal_layers(tiny):
    from longvideo.attention.temporal import FullAttention, WindowAttention

    model = tiny[0]
    latents, known, context = inputs(frames=7, conditioning_frames=2)
    arguments = (latents, torch.tensor(400), context)
    plain = model(*arguments, known=KnownFrames([0, 1], known))
    full = model.with_temporal_attention(FullAttention())(*arguments, known=KnownFrames([0, 1], known))
    window = model.with_temporal_attention(WindowAttention(window=1))(*arguments, known=KnownFrames([0, 1], known))
    assert torch.allclose(full, plain, atol=1e-5)
    assert not torch.allclose(window, plain, atol=1e-3)


# ---------------------------------------------------------------------------------------------------
# continuation through the node


@pytest.fixture
def calls(monkeypatch):
    recorded = []
    original = continuation.denoise

    def spy(denoiser, guidance, shape, **kwargs):
        result = original(denoiser, guidance, shape, **kwargs)
        recorded.append((kwargs["conditioning"], result))
        return result

    monkeypatch.setattr(continuation, "denoise", spy)
    return recorded


def sample(model, clip, method="learned", chunks=3, frames=5, k=(2, 2), **optional):
    encode = LongVideoTextEncode().encode
    return LongVideoContinuationSampler().sample(
        model, encode(clip, "a red circle moving right")[0], encode(clip, "")[0], 32, 32, frames, chunks, k[0], k[1],
        method, 3, 3, 7.5, "ddim", **optional,
    )[0]["samples"]


def test_learned_continuation_keeps_the_known_frames_exact(folder, tiny, calls):
    model, clip, vae = tiny
    image = torch.rand(1, 32, 32, 3)
    out = sample(model, clip, start_image=image, vae=vae)
    assert out.shape[2] == 1 + (5 - 1) + 2 * (5 - 2)
    assert all(type(conditioning).__name__ == "LearnedConditioning" for conditioning, _ in calls)
    assert torch.equal(out[:, :, :1], vae.encode(image, 1))
    assert torch.equal(calls[0][0].known.latents, out[:, :, :1])
    for (_, previous), (conditioning, current) in zip(calls, calls[1:]):
        assert torch.equal(conditioning.known.latents, previous[:, :, -2:])
        assert torch.equal(current[:, :, :2], previous[:, :, -2:])
    assert torch.isfinite(out).all()
    corrected = load(folder, corrected_padding_mask=True)[0]
    assert not torch.allclose(sample(corrected, clip, start_image=image, vae=vae), out, atol=1e-4)


def test_learned_continuation_extends_a_latent_clip(tiny):
    model, clip, _ = tiny
    start = torch.randn(1, 4, 3, 4, 4)
    out = sample(model, clip, chunks=2, frames=6, k=(1, 3), start_latent={"samples": start})
    assert torch.equal(out[:, :, :3], start) and out.shape[2] > 3


def test_node_rejects_what_continuityseq_cannot_do(tiny, tiny_model_folder):
    model, clip, vae = tiny
    image = torch.rand(1, 32, 32, 3)
    with pytest.raises(NodeInputError, match="choose method 'learned'"):
        sample(model, clip, method="replace", start_image=image, vae=vae)
    with pytest.raises(NodeInputError, match="only continues frames: connect start_image"):
        sample(model, clip)
    encode = LongVideoTextEncode().encode
    with pytest.raises(NodeInputError, match="LongVideoSampler: this model only works from known frames \\(a ContinuitySeq model continues"):
        LongVideoSampler().sample(model, encode(clip, "x")[0], encode(clip, "")[0], {"samples": torch.zeros(1, 4, 3, 4, 4)},
                                  0, 2, 7.5, "ddim")
    plain, plain_clip, plain_vae = load(tiny_model_folder)
    with pytest.raises(NodeInputError, match="method 'learned' needs a model trained to take conditioning frames"):
        sample(plain, plain_clip, start_image=image, vae=plain_vae)


# ---------------------------------------------------------------------------------------------------
# against the original code, when a checkout of it is at hand


ORIGINAL = os.environ.get("LONGVIDEO_CONTINUITYSEQ_SRC")


@pytest.mark.skipif(not ORIGINAL, reason="set LONGVIDEO_CONTINUITYSEQ_SRC to a checkout of bfasenfest/continuity-seq")
def test_matches_the_original_code(tiny):
    pytest.importorskip("einops")
    package = type(sys)("continuityseq_original")
    package.__path__ = [os.path.join(ORIGINAL, "models")]
    sys.modules["continuityseq_original"] = package
    try:
        original = importlib.import_module("continuityseq_original.unet").UNet3DConditionModel(**ARGUMENTS).eval()
    finally:
        for name in [n for n in sys.modules if n.startswith("continuityseq_original")]:
            del sys.modules[name]
    ours = tiny[0].unet
    assert {k: v.shape for k, v in original.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    original.load_state_dict(ours.state_dict(), strict=True)
    for frames, conditioning_frames, size in ((6, 2, (8, 8)), (4, 4, (8, 8)), (3, 5, (8, 8)), (1, 2, (8, 8)), (5, 1, (6, 10))):
        sample, conditioning, context = inputs(frames, conditioning_frames, size=size)
        with torch.no_grad():
            expected = original(sample, conditioning, torch.tensor(321), context).sample
        assert torch.allclose(run(ours, sample, conditioning, context, t=321), expected, atol=1e-5, rtol=0)
