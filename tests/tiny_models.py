"""Tiny random text-to-video models in the real on-disk formats, built by the tests (a few hundred KB).

`save_tiny_text_to_video(folder)` writes a complete diffusers folder (model_index.json, unet/, vae/,
text_encoder/, tokenizer/, scheduler/) with diffusers' and transformers' own `save_pretrained`, so the
loader under test reads exactly what a downloaded Zeroscope or ModelScope folder contains.
"""

import os

import torch

CONTEXT_WIDTH = 32


def tiny_tokenizer():
    """A CLIP byte-level BPE tokenizer with one token per character: valid files, no download."""
    from transformers import CLIPTokenizer

    characters = [chr(c) for c in range(ord("!"), ord("~") + 1)] + [chr(c) for c in range(161, 161 + 94)]
    vocab = {}
    for character in characters:
        vocab[character] = len(vocab)
    for character in characters:
        vocab[character + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_components(seed: int = 0):
    """(unet, vae, text_encoder, tokenizer, scheduler) with random weights; the VAE downsamples by 8."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet3DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=CONTEXT_WIDTH,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=CONTEXT_WIDTH,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
    )
    return unet.eval(), vae.eval(), text_encoder.eval(), tokenizer, scheduler


def save_tiny_text_to_video(folder: str, seed: int = 0, safe_serialization: bool = True) -> str:
    """Write a complete diffusers text-to-video folder; returns its path."""
    from diffusers import TextToVideoSDPipeline

    unet, vae, text_encoder, tokenizer, scheduler = tiny_components(seed)
    pipeline = TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    pipeline.save_pretrained(folder, safe_serialization=safe_serialization)
    return os.path.abspath(folder)


# ---------------------------------------------------------------------------------------------------
# ContinuitySeq (bfasenfest/continuity-seq): its UNet state dict, written out from the original code's layout
# rules here (independently of models/continuityseq.py), so that a strict load checks our module against them.

CONTINUITYSEQ_CONFIG = {
    "_class_name": "UNet3DConditionModel",  # what the original's save_pretrained writes: its class reuses the name
    "_diffusers_version": "0.18.2",
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
    # 32 channels at least: the original hard-codes 32 groups in temporal convs and transformer_in.
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "use_conditioning_norm": True,
    "norm_num_groups": 8,
    "norm_eps": 1e-5,
    "cross_attention_dim": CONTEXT_WIDTH,
    "attention_head_dim": 16,
}


def continuityseq_layout(config: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor name -> shape of the original UNet3DConditionModel (models/unet.py, unet_blocks.py, resnet.py,
    transformers.py) for `config`."""
    layout = {}
    use_norm = config.get("use_conditioning_norm", True)
    ctx, head = config["cross_attention_dim"], config["attention_head_dim"]

    def norm(prefix, c):
        layout.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,)})

    def linear(prefix, i, o, bias=True):
        layout[f"{prefix}.weight"] = (o, i)
        if bias:
            layout[f"{prefix}.bias"] = (o,)

    def conditioner(prefix, i, o, k):  # resnet.py Conditioner: two convs and the conditioning block
        for conv in ("spatial_conv", "conditioning_conv"):
            layout.update({f"{prefix}.{conv}.weight": (o, i, k, k), f"{prefix}.{conv}.bias": (o,)})
        if use_norm:
            for part in ("gamma", "beta"):
                linear(f"{prefix}.conditioning_block.conditioning_norm.{part}.0", o, o)

    def resnet(prefix, i, o, temb):
        norm(f"{prefix}.norm1", i), norm(f"{prefix}.c_norm1", i)
        conditioner(f"{prefix}.conv1", i, o, 3)
        linear(f"{prefix}.time_emb_proj", temb, o), linear(f"{prefix}.time_c_emb_proj", temb, o)
        norm(f"{prefix}.norm2", o), norm(f"{prefix}.c_norm2", o)
        conditioner(f"{prefix}.conv2", o, o, 3)
        if i != o:
            conditioner(f"{prefix}.conv_shortcut", i, o, 1)

    def temp_conv(prefix, c):
        for n, conv_index in ((1, 2), (2, 3), (3, 3), (4, 3)):
            norm(f"{prefix}.conv{n}.0", c)
            layout.update({f"{prefix}.conv{n}.{conv_index}.weight": (c, c, 3, 1, 1), f"{prefix}.conv{n}.{conv_index}.bias": (c,)})

    def block(prefix, dim, attn1_kv, attn2_kv):  # diffusers BasicTransformerBlock
        for n, kv in ((1, attn1_kv), (2, attn2_kv)):
            norm(f"{prefix}.norm{n}", dim)
            linear(f"{prefix}.attn{n}.to_q", dim, dim, bias=False)
            linear(f"{prefix}.attn{n}.to_k", kv, dim, bias=False)
            linear(f"{prefix}.attn{n}.to_v", kv, dim, bias=False)
            linear(f"{prefix}.attn{n}.to_out.0", dim, dim)
        norm(f"{prefix}.norm3", dim)
        linear(f"{prefix}.ff.net.0.proj", dim, dim * 8), linear(f"{prefix}.ff.net.2", dim * 4, dim)

    def spatial(prefix, c):
        norm(f"{prefix}.norm", c), linear(f"{prefix}.proj_in", c, c)
        block(f"{prefix}.transformer_blocks.0", c, c, ctx)
        linear(f"{prefix}.proj_out", c, c)

    def temporal(prefix, c, inner):
        norm(f"{prefix}.norm", c), linear(f"{prefix}.proj_in", c, inner)
        block(f"{prefix}.transformer_blocks.0", inner, inner, inner)
        linear(f"{prefix}.proj_out", inner, c)

    def conditioning_attention(prefix, c):
        norm(f"{prefix}.norm", c), linear(f"{prefix}.proj_in", c, c)
        norm(f"{prefix}.cond_norm", c), linear(f"{prefix}.cond_proj_in", c, c)
        block(f"{prefix}.transformer_blocks.0", c, c, c)
        linear(f"{prefix}.proj_out", c, c)

    def attention_layer(prefix, n, c):
        spatial(f"{prefix}.attentions.{n}", c)
        temporal(f"{prefix}.temp_attentions.{n}", c, c)
        conditioning_attention(f"{prefix}.conditioning_attentions.{n}", c)

    channels = config["block_out_channels"]
    temb = channels[0] * 4
    layers = config["layers_per_block"]
    conditioner("conv_in", config["in_channels"], channels[0], 3)
    linear("time_embedding.linear_1", channels[0], temb), linear("time_embedding.linear_2", temb, temb)
    temporal("transformer_in", channels[0], 8 * head)
    for i, kind in enumerate(config["down_block_types"]):
        prefix, out = f"down_blocks.{i}", channels[i]
        for n in range(layers):
            resnet(f"{prefix}.resnets.{n}", channels[max(i - 1, 0)] if n == 0 else out, out, temb)
            temp_conv(f"{prefix}.temp_convs.{n}", out)
            if kind == "CrossAttnDownBlock3D":
                attention_layer(prefix, n, out)
        if i < len(channels) - 1:
            conditioner(f"{prefix}.downsamplers.0.conv", out, out, 3)
    for n in range(2):
        resnet(f"mid_block.resnets.{n}", channels[-1], channels[-1], temb)
        temp_conv(f"mid_block.temp_convs.{n}", channels[-1])
    attention_layer("mid_block", 0, channels[-1])
    reverse = channels[::-1]
    for i, kind in enumerate(config["up_block_types"]):
        prefix, out = f"up_blocks.{i}", reverse[i]
        for n in range(layers + 1):
            skip = reverse[min(i + 1, len(channels) - 1)] if n == layers else out
            resnet(f"{prefix}.resnets.{n}", (reverse[max(i - 1, 0)] if n == 0 else out) + skip, out, temb)
            temp_conv(f"{prefix}.temp_convs.{n}", out)
            if kind == "CrossAttnUpBlock3D":
                attention_layer(prefix, n, out)
        if i < len(channels) - 1:
            conditioner(f"{prefix}.upsamplers.0.conv", out, out, 3)
    norm("conv_norm_out", channels[0])
    conditioner("conv_out", channels[0], config["out_channels"], 3)
    return layout


def continuityseq_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the original layout, scaled so that activations stay of order one."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in continuityseq_layout(config).items():
        noise = torch.randn(shape, generator=generator)
        if len(shape) == 1:
            is_norm_weight = name.endswith(".weight")
            state[name] = (1.0 if is_norm_weight else 0.0) + 0.1 * noise
        else:
            state[name] = noise / (torch.tensor(shape[1:]).prod().float().sqrt() * 2)
    return state


def save_tiny_continuityseq(folder: str, seed: int = 0, safe_serialization: bool = True, config: dict | None = None) -> str:
    """A complete diffusers folder whose unet/ holds a random ContinuitySeq UNet in the original key layout."""
    import json

    from safetensors.torch import save_file

    config = dict(CONTINUITYSEQ_CONFIG if config is None else config)
    folder = save_tiny_text_to_video(folder, seed)
    unet = os.path.join(folder, "unet")
    for name in os.listdir(unet):
        os.remove(os.path.join(unet, name))
    with open(os.path.join(unet, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
    state = continuityseq_state_dict(config, seed)
    if safe_serialization:
        save_file(state, os.path.join(unet, "diffusion_pytorch_model.safetensors"))
    else:
        torch.save(state, os.path.join(unet, "diffusion_pytorch_model.bin"))
    return folder
def save_tiny_vdp(path: str, seed: int = 0) -> str:
    """Write a tiny random video-diffusion-pytorch Trainer checkpoint (model-N.pt layout: GaussianDiffusion state
    dicts under 'model' and 'ema'); a pixel-space model on RGB with an 8-wide condition vector."""
    from longvideo.models.vdp import VDPConfig, VDPUnet3D, cosine_betas

    torch.manual_seed(seed)
    network = VDPUnet3D(VDPConfig(dim=8, dim_mults=(1, 2), cond_dim=8, attn_heads=2, attn_dim_head=8))
    state = {f"denoise_fn.{key}": value.clone() for key, value in network.state_dict().items()}
    state["betas"] = cosine_betas(1000).float()
    torch.save({"step": 0, "model": state, "ema": state, "scaler": {}}, path)
    return os.path.abspath(path)
