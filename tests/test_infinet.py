import json
import os

import pytest
import torch
from diffusers import UNet3DConditionModel

from longvideo.models.denoiser import KnownFrames, UNet3DDenoiser
from longvideo.models.infinet import InfiNet, InfiNetDenoiser, load_infinet, save_infinet
from longvideo.models.loader import DEFAULT_SCHEDULER_CONFIG, ModelLoadError
from longvideo.nodes.common import NodeInputError
from longvideo.nodes.hierarchy import LongVideoInfiNetLoader

MODELSCOPE_UNET = {"in_channels": 4, "block_out_channels": [320, 640, 1280, 1280]}


def four_block_unet(seed=0):
    """A tiny UNet3D with ModelScope's block layout (3 cross-attention down blocks + 1 plain, mirrored up)."""
    torch.manual_seed(seed)
    return UNet3DConditionModel(block_out_channels=(8, 8, 16, 16), layers_per_block=2, in_channels=4, out_channels=4,
                                cross_attention_dim=32, attention_head_dim=4, norm_num_groups=4).eval()


@pytest.fixture(scope="module")
def unet():
    return four_block_unet()


def randomise(infinet, seed=1, std=0.1):
    generator = torch.Generator().manual_seed(seed)
    for parameter in infinet.parameters():
        parameter.data = torch.randn(parameter.shape, generator=generator) * std
    return infinet


def inputs(height=5, width=9, batch=2, frames=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, frames, height, width, generator=generator)
    context = torch.randn(batch, 7, 32, generator=generator)
    known = KnownFrames([0, frames - 1], torch.randn(batch, 4, 2, height, width, generator=generator))
    return latents, torch.tensor(601), context, known


@pytest.mark.parametrize("condition", ["clean", "noisy"])
def test_zero_initialised_infinet_leaves_the_unet_bit_identical(unet, condition):
    base = UNet3DDenoiser(unet, DEFAULT_SCHEDULER_CONFIG)
    latents, timestep, context, known = inputs()
    with torch.no_grad():
        plain = base(latents, timestep, context)
        with_infinet = InfiNetDenoiser(base, InfiNet.for_unet_config(unet.config), condition)(latents, timestep, context, known=known)
    assert torch.equal(plain, with_infinet)


def test_modelscope_layout_table():
    """Entries 0-3 of the InfiNet repo's lists, for the ModelScope / Zeroscope UNet: channels, strides, 661,760 parameters."""
    infinet = InfiNet.for_unet_config(MODELSCOPE_UNET)
    assert [(e.conv_w.out_channels, e.stride) for e in infinet.input_blocks_injections] == [(320, 1), (640, 2), (1280, 4), (1280, 8)]
    assert [(e.conv_w.out_channels, e.stride) for e in infinet.output_blocks_injections] == [(1280, 8), (1280, 4), (640, 2), (320, 1)]
    entry = infinet.input_blocks_injections[0]
    assert tuple(entry.conv_w.weight.shape) == (320, 4, 3, 3) and tuple(entry.mask_conv_b.weight.shape) == (320, 1, 3, 3)
    assert sum(p.numel() for p in infinet.parameters()) == 661_760


@pytest.mark.parametrize(("height", "width"), [(32, 32), (40, 72), (72, 40)])
def test_modulation_fits_every_block(unet, height, width):
    """Every hooked layer's hidden states have exactly the shape of its block's modulation maps, for the tiny model and
    (by resolution) the full-size ModelScope channels; each map is [B*F, C_i, ceil(H / 2^i), ceil(W / 2^i)]."""
    infinet = InfiNet.for_unet_config(unet.config)
    full = InfiNet.for_unet_config(MODELSCOPE_UNET)
    latents, timestep, context, known = inputs(height, width, batch=1, frames=3)
    denoiser = InfiNetDenoiser(UNet3DDenoiser(unet, DEFAULT_SCHEDULER_CONFIG), infinet)
    condition, mask = denoiser.condition_inputs(latents, known)
    down, up = infinet.modulations(condition, mask)
    full_down, full_up = full.modulations(condition, mask)
    seen = []
    for blocks, maps, full_maps in ((unet.down_blocks, down, full_down), (unet.up_blocks, up, full_up)):
        for block, block_maps, full_block_maps in zip(blocks, maps, full_maps):
            for layer in block.temp_convs:
                layer.register_forward_hook(
                    lambda m, i, output, b=block_maps, f=full_block_maps: seen.append((output.shape, b, f)))
    try:
        with torch.no_grad():
            unet(latents, timestep, encoder_hidden_states=context)
    finally:
        for blocks in (unet.down_blocks, unet.up_blocks):
            for block in blocks:
                for layer in block.temp_convs:
                    layer._forward_hooks.clear()
    assert len(seen) == 4 * 2 + 4 * 3  # every layer: 2 per down block, 3 per up block
    for hidden, maps, full_maps in seen:
        assert all(m.shape == hidden for m in maps)
        assert all(m.shape[2:] == hidden[2:] and m.shape[0] == hidden[0] for m in full_maps)
    sizes = [full_maps[0].shape for _, _, full_maps in seen]
    assert [tuple(s[1:]) for s in sizes[:8:2]] == [
        (c, -(-height // 2**i), -(-width // 2**i)) for i, c in enumerate((320, 640, 1280, 1280))]


def test_modulation_applies_after_every_temporal_conv_and_only_during_calls(unet):
    infinet = randomise(InfiNet.for_unet_config(unet.config))
    base = UNet3DDenoiser(unet, DEFAULT_SCHEDULER_CONFIG)
    denoiser = InfiNetDenoiser(base, infinet)
    latents, timestep, context, known = inputs()
    calls = []
    original = type(infinet.input_blocks_injections[0]).apply
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(infinet.input_blocks_injections[0]), "apply", staticmethod(lambda h, m: calls.append(1) or original(h, m)))
        with torch.no_grad():
            modulated = denoiser(latents, timestep, context, known=known)
    assert len(calls) == 4 * 2 + 4 * 3
    with torch.no_grad():
        plain = base(latents, timestep, context)
        # The global pass (no known frames) skips InfiNet, as the InfiNet repo does at diffusion depth 0.
        assert torch.equal(denoiser(latents, timestep, context), plain)
    assert (modulated - plain).abs().max() > 1e-3
    assert all(not layer._forward_hooks for blocks in (unet.down_blocks, unet.up_blocks) for b in blocks for layer in b.temp_convs)


def test_attention_backends_and_temporal_scopes_keep_the_modulation(unet):
    """The modulation hooks sit on the temporal convs, so swapping attention processors cannot skip them (in the InfiNet
    repo, gradient checkpointing did; diffusers' UNet3D has no gradient checkpointing at all)."""
    from diffusers.models.attention_processor import AttnProcessor

    from longvideo.attention.temporal import FullAttention

    latents, timestep, context, known = inputs()
    infinet = randomise(InfiNet.for_unet_config(unet.config))
    base = UNet3DDenoiser(unet, DEFAULT_SCHEDULER_CONFIG)
    with torch.no_grad():
        expected = InfiNetDenoiser(base, infinet)(latents, timestep, context, known=known)
        scoped = InfiNetDenoiser(base.with_temporal_attention(FullAttention()), infinet)(latents, timestep, context, known=known)
        original = unet.attn_processors
        unet.set_attn_processor(AttnProcessor())
        try:
            classic = InfiNetDenoiser(base, infinet)(latents, timestep, context, known=known)
        finally:
            unet.set_attn_processor(original)
    assert torch.allclose(scoped, expected, atol=1e-5) and torch.allclose(classic, expected, atol=1e-5)


def test_clean_condition_reads_the_known_latents_and_noisy_condition_the_sample(unet):
    infinet = randomise(InfiNet.for_unet_config(unet.config))
    base = UNet3DDenoiser(unet, DEFAULT_SCHEDULER_CONFIG)
    latents, timestep, context, known = inputs()
    other = KnownFrames(known.indices, known.latents + 1)
    clean, noisy = InfiNetDenoiser(base, infinet, "clean"), InfiNetDenoiser(base, infinet, "noisy")
    condition, mask = clean.condition_inputs(latents, known)
    assert torch.equal(mask.reshape(2, 5, -1)[:, :, 0], torch.tensor([[1.0, 0, 0, 0, 1]] * 2))
    assert torch.equal(condition.reshape(2, 5, 4, 5, 9)[:, [0, 4]], known.latents.permute(0, 2, 1, 3, 4))
    assert condition.reshape(2, 5, -1)[:, 1:4].abs().max() == 0
    with torch.no_grad():
        assert not torch.equal(clean(latents, timestep, context, known=known), clean(latents, timestep, context, known=other))
        assert torch.equal(noisy(latents, timestep, context, known=known), noisy(latents, timestep, context, known=other))


def infinet_repo_checkpoint(unet, folder, drop=None):
    """The InfiNet repo's unet folder: base UNet weights (attention changed, as its training unfreezes it) and InfiNet
    entries 0-7 / 0-11, of which only 0-3 fit the blocks (the extras have the repo's odd shapes)."""
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    attention_key = next(k for k in state if k.endswith("attn1.to_out.0.weight"))
    state[attention_key] += 0.5
    fitting = randomise(InfiNet.for_unet_config(unet.config), seed=3)
    for key, value in fitting.state_dict().items():
        state[f"infinet.{key}"] = value
    for name, extras in (("input_blocks_injections", range(4, 8)), ("output_blocks_injections", range(4, 12))):
        for index in extras:
            for conv, inputs_ in (("conv_w", 4), ("conv_b", 4), ("mask_conv_w", 1), ("mask_conv_b", 1)):
                state[f"infinet.{name}.{index}.{conv}.weight"] = torch.randn(5, inputs_, 3, 3)
                state[f"infinet.{name}.{index}.{conv}.bias"] = torch.randn(5)
    if drop:
        state = {k: v for k, v in state.items() if not k.startswith(drop)}
    unet_folder = os.path.join(folder, "unet")
    os.makedirs(unet_folder)
    torch.save(state, os.path.join(unet_folder, "diffusion_pytorch_model.bin"))
    with open(os.path.join(unet_folder, "config.json"), "w") as handle:
        json.dump({**dict(unet.config), "_class_name": "UNet3DConditionModel", "use_infinet": True}, handle)
    return fitting, state[attention_key], attention_key


def test_infinet_repo_checkpoint_loads_entries_0_to_3_and_the_base_weights(unet, tmp_path):
    fitting, attention, attention_key = infinet_repo_checkpoint(unet, str(tmp_path / "infinet-run"))
    (weights,) = LongVideoInfiNetLoader().load("", "auto", infinet_path=str(tmp_path / "infinet-run"))
    assert weights.condition == "noisy"
    base = UNet3DDenoiser(unet, DEFAULT_SCHEDULER_CONFIG)
    denoiser = InfiNetDenoiser.from_weights(base, weights)
    for ours, theirs in zip(denoiser.infinet.state_dict().values(), fitting.state_dict().values()):
        assert torch.equal(ours, theirs)
    assert torch.equal(denoiser.base.unet.state_dict()[attention_key], attention)
    assert not torch.equal(unet.state_dict()[attention_key], attention)  # the given model is not changed
    # Same result as a UNet built from that file with a hand-written InfiNet (the repo's forward, by hooks).
    reference_unet = four_block_unet()
    reference_unet.load_state_dict({k: v for k, v in torch.load(str(tmp_path / "infinet-run/unet/diffusion_pytorch_model.bin"),
                                                                 weights_only=True).items() if not k.startswith("infinet.")})
    latents, timestep, context, known = inputs()
    expected = reference_forward(reference_unet, fitting, latents, timestep, context)
    with torch.no_grad():
        assert torch.allclose(denoiser(latents, timestep, context, known=known), expected, atol=1e-5)


def reference_forward(unet, infinet, latents, timestep, context):
    """The InfiNet repo's DoD forward, written out: noisy sample as x_c, mask on the first and last frame, the block's
    entry after each layer's temporal conv (convs recomputed per layer, as the repo does)."""
    batch, _, frames, height, width = latents.shape
    x_c = latents.permute(0, 2, 1, 3, 4).reshape(batch * frames, 4, height, width)
    x_m = torch.zeros(batch, 1, frames, height, width)
    x_m[:, :, 0] = 1
    x_m[:, :, -1] = 1
    x_m = x_m.permute(0, 2, 1, 3, 4).reshape(batch * frames, 1, height, width)
    handles = []
    for blocks, entries in ((unet.down_blocks, infinet.input_blocks_injections), (unet.up_blocks, infinet.output_blocks_injections)):
        for block, entry in zip(blocks, entries):
            def dod(module, args, h, e=entry):
                h = e.conv_w(x_c) * h + e.conv_b(x_c) + h
                return e.mask_conv_w(x_m) * h + e.mask_conv_b(x_m) + h
            handles += [layer.register_forward_hook(dod) for layer in block.temp_convs]
    try:
        with torch.no_grad():
            return unet(latents, timestep, encoder_hidden_states=context).sample
    finally:
        for handle in handles:
            handle.remove()


def test_missing_entry_is_named(unet, tmp_path):
    infinet_repo_checkpoint(unet, str(tmp_path / "broken"), drop="infinet.output_blocks_injections.3.")
    weights = load_infinet(str(tmp_path / "broken"))
    with pytest.raises(ModelLoadError, match=r"lack 'infinet\.output_blocks_injections\.3\.conv_w\.weight'.*entries 0-3"):
        InfiNetDenoiser.from_weights(UNet3DDenoiser(unet, DEFAULT_SCHEDULER_CONFIG), weights)


def test_file_without_infinet_keys_is_rejected(unet, tmp_path):
    from safetensors.torch import save_file

    save_file({"conv_in.weight": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(NodeInputError, match="not an InfiNet checkpoint"):
        LongVideoInfiNetLoader().load("", "auto", infinet_path=str(tmp_path / "plain.safetensors"))


def test_infinet_for_another_model_is_rejected(unet, tmp_path):
    path = str(tmp_path / "big.safetensors")
    save_infinet(path, InfiNet(4, [8, 16, 16, 32]), "clean")
    with pytest.raises(ModelLoadError, match="has shape .* but this model needs"):
        InfiNetDenoiser.from_weights(UNet3DDenoiser(unet, DEFAULT_SCHEDULER_CONFIG), load_infinet(path))


def test_own_safetensors_round_trip(unet, tmp_path):
    path = str(tmp_path / "ours.safetensors")
    trained = randomise(InfiNet.for_unet_config(unet.config), seed=5)
    save_infinet(path, trained, "clean")
    weights = load_infinet(path)
    assert weights.condition == "clean" and weights.base_weights is None
    assert load_infinet(path, "noisy").condition == "noisy"
    denoiser = InfiNetDenoiser.from_weights(UNet3DDenoiser(unet, DEFAULT_SCHEDULER_CONFIG), weights)
    assert denoiser.base.unet is unet
    for ours, theirs in zip(denoiser.infinet.state_dict().values(), trained.state_dict().values()):
        assert torch.equal(ours, theirs)


def test_partial_base_weights_replace_only_their_tensors(unet, tmp_path):
    """A file with some base weights (e.g. fine-tuned attention): those come from the file, the rest is shared."""
    path = str(tmp_path / "ours.safetensors")
    key = next(k for k in unet.state_dict() if k.endswith("attn2.to_out.0.weight"))
    tuned = unet.state_dict()[key] * 2
    save_infinet(path, InfiNet.for_unet_config(unet.config), "clean", base_weights={key: tuned})
    denoiser = InfiNetDenoiser.from_weights(UNet3DDenoiser(unet, DEFAULT_SCHEDULER_CONFIG), load_infinet(path))
    state, own = denoiser.base.unet.state_dict(), unet.state_dict()
    assert torch.equal(state[key], tuned) and not torch.equal(own[key], tuned)
    assert all(state[k].data_ptr() == own[k].data_ptr() for k in own if k != key)
