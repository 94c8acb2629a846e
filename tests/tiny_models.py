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
