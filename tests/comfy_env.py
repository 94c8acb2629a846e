"""Import the real ComfyUI in a test process (CPU, no torchvision) and build tiny checkpoints of its video models.

ComfyUI is found through $COMFYUI_PATH, else ../shared/comfyui beside the checkout. `comfyui_or_skip()` skips a test
with a visible reason when neither exists (a user's machine without ComfyUI); CI sets CI=true and .ci/run fails when
these tests were skipped there.

A few comfy/ldm modules import torchvision at import time, and there is no CPU torchvision for the pinned torch:
`install_torchvision_stand_in()` puts a stand-in module in its place that fails only when something is used.
"""

import importlib.abc
import importlib.machinery
import os
import sys
import types

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
DEFAULT_COMFYUI = os.path.join(os.path.dirname(ROOT), "shared", "comfyui")


def comfyui_path() -> str | None:
    path = os.environ.get("COMFYUI_PATH") or DEFAULT_COMFYUI
    return path if os.path.isfile(os.path.join(path, "comfy", "model_management.py")) else None


class _Absent(types.ModuleType):
    """A module that is not installed: importing it works, using anything from it raises."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Absent(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.__name__} was called, but torchvision is not installed (a test stand-in is in its place)")


class _AbsentFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, root: str):
        self.root = root

    def find_spec(self, name, path=None, target=None):
        if name == self.root or name.startswith(self.root + "."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Absent(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def install_torchvision_stand_in() -> None:
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        if not any(isinstance(f, _AbsentFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _AbsentFinder("torchvision"))


def remove_torchvision_stand_in() -> None:
    """Undo install_torchvision_stand_in for the rest of the test session (other libraries probe for torchvision)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AbsentFinder)]
    for name in [n for n in sys.modules if (n == "torchvision" or n.startswith("torchvision.")) and isinstance(sys.modules[n], _Absent)]:
        del sys.modules[name]


def import_comfy():
    """Put ComfyUI on sys.path and import what the tests use, on the CPU."""
    path = comfyui_path()
    if path is None:
        raise RuntimeError("ComfyUI was not found: set COMFYUI_PATH")
    # First on the path: ComfyUI's top-level `nodes` module must win over the pack's `nodes/` package of that name.
    if sys.path[:1] != [path]:
        sys.path[:] = [path] + [entry for entry in sys.path if entry != path]
    # transformers looks for torchvision once, when a model module is first imported: let the pack's text encoder be
    # imported before the stand-in exists, or a later test's CLIPTextModel import fails on it.
    from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

    install_torchvision_stand_in()
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401
    import comfy.sample  # noqa: F401
    import comfy.samplers  # noqa: F401
    import comfy.sd  # noqa: F401
    import folder_paths  # noqa: F401
    import comfy


def comfy_nodes():
    """ComfyUI's own `nodes` module (its core node classes), never the pack's `nodes/` package of the same name."""
    import_comfy()
    import nodes

    if not os.path.realpath(nodes.__file__).startswith(os.path.realpath(comfyui_path()) + os.sep):
        raise RuntimeError(f"'import nodes' found {nodes.__file__}, not ComfyUI's nodes.py: import ComfyUI before the pack")
    return nodes


def leave_comfyui() -> None:
    """After a test module that imported ComfyUI: the rest of the session is headless again. folder_paths and ComfyUI's
    nodes.py (which keeps the folder_paths it imported) are dropped, so a later module's UNETLoader searches the folders
    that module registers; ComfyUI's folder no longer shadows anything on sys.path; the torchvision stand-in goes."""
    sys.modules.pop("folder_paths", None)
    nodes_file = os.path.join(comfyui_path() or "", "nodes.py")
    if getattr(sys.modules.get("nodes"), "__file__", None) == nodes_file:
        del sys.modules["nodes"]
    if comfyui_path() in sys.path:
        sys.path.remove(comfyui_path())
    remove_torchvision_stand_in()


def import_comfy_or_report() -> bool:
    """For the benches: import ComfyUI, or say how to point at it and return False."""
    if comfyui_path() is None:
        print("ComfyUI not found: set COMFYUI_PATH")
        return False
    import_comfy()
    return True


def comfyui_or_skip():
    """Import ComfyUI for a test; without it skip with the reason, or fail under CI (CI=true), which must provide it."""
    if comfyui_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("ComfyUI was not found in CI: .ci/run must provide it (COMFYUI_PATH or ../shared/comfyui)")
        pytest.skip("ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout (default ../shared/comfyui) to run "
                    "the tests against ComfyUI's own video models")
    return import_comfy()


# ---------------------------------------------------------------------------------------------------
# tiny random checkpoints of ComfyUI's own model classes, saved as a user's file would be


def _fill(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """ComfyUI's ops skip weight initialisation: give every weight seeded small random values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(module.named_parameters()):
            if name.endswith("norm.weight") or ".norm" in name and name.endswith("weight"):
                parameter.copy_(1 + scale * torch.randn(parameter.shape, generator=generator))
            else:
                parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))


def _save(model: torch.nn.Module, path: str, seed: int) -> str:
    from safetensors.torch import save_file

    _fill(model, seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def save_tiny_wan21(path: str, seed: int = 0, channels: int = 16, extra_in: int = 0, kind: str = "t2v") -> str:
    """A tiny random Wan 2.1 text-to-video DiT (ComfyUI's detection: head size 128, text width 4096) as safetensors;
    channels 48 makes it a Wan 2.2 TI2V 5B-like model (Wan 2.2's 48-channel latents); extra_in 20 gives it the 4 mask
    + 16 image input channels of an image-to-video Wan (Wan 2.2 A14B I2V's and Fun InP's layout: WanImageToVideo's
    concat latents). kind "i2v" adds Wan 2.1 I2V 14B's CLIP vision image embedding (img_emb, 1280 wide), "flf2v" the
    first-last-frame model's (img_emb with positions for two images), "vace" one VACE block (VaceWanModel)."""
    import comfy.ops
    from comfy.ldm.wan.model import VaceWanModel, WanModel

    sizes = dict(dim=128, ffn_dim=256, num_heads=1, num_layers=2, in_dim=channels + extra_in, out_dim=channels,
                 text_dim=4096, freq_dim=256, operations=comfy.ops.disable_weight_init)
    if kind == "vace":
        model = VaceWanModel(vace_layers=1, vace_in_dim=96, **sizes)  # 2 x 16 latent channels + 64 mask channels
    else:
        model = WanModel(model_type="t2v" if kind == "t2v" else "i2v",
                         flf_pos_embed_token_number=514 if kind == "flf2v" else None, **sizes)
    return _save(model, path, seed)


def save_tiny_ltxv(path: str, seed: int = 0) -> str:
    """A tiny random LTX-Video DiT: ComfyUI's detection reads the head size as to_k's width / 32 heads and the
    cross-attention width off transformer_blocks.0.attn2.to_k (here 32 heads x 4 = 128 wide, 1 layer); T5-XXL's
    4096-wide tokens (the caption projection's input)."""
    import comfy.ops
    from comfy.ldm.lightricks.model import LTXVModel

    model = LTXVModel(in_channels=128, cross_attention_dim=128, attention_head_dim=4, num_attention_heads=32,
                      caption_channels=4096, num_layers=1, operations=comfy.ops.disable_weight_init)
    return _save(model, path, seed)


def save_tiny_hunyuan_video(path: str, seed: int = 0, in_channels: int = 16) -> str:
    """A tiny random HunyuanVideo DiT: ComfyUI's detection assumes head size 128 (one head of 128 here), reads 3-D patches
    (1, 2, 2), the CLIP-L pooled input (vector_in, 768) and the text width (4096, LLaVA's) off the weights; one double
    and one single block, no guidance embedding. in_channels 33 makes it the image-to-video model (16 latent + 16 image
    + 1 mask channels: HunyuanImageToVideo's v1 concat)."""
    import comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo

    model = HunyuanVideo(image_model="hunyuan_video", in_channels=in_channels, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                         hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56],
                         theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=False, byt5=False, meanflow=False,
                         operations=comfy.ops.disable_weight_init)
    return _save(model, path, seed)


def random_wan21_vae_state(seed: int = 0) -> dict:
    """A state dict of ComfyUI's Wan 2.1 VAE in the configuration comfy.sd.VAE builds for these keys (dim 96: ComfyUI
    fixes it, so no tiny one loads), seeded random weights: convolutions at a fan-in scale, norms at 1, biases 0."""
    from comfy.ldm.wan.vae import WanVAE

    model = WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                   temperal_downsample=[False, True, True], dropout=0.0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("gamma"):
                parameter.fill_(1.0)
            elif parameter.dim() > 1:
                fan_in = parameter[0].numel()
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in**0.5)
            else:
                parameter.zero_()
    return model.state_dict()


class StandInVideoVAE:
    """ComfyUI's VAE interface (encode, decode, latent_channels, the compression formulas the comfy_extras nodes read)
    for a causal video VAE of any layout: latent frame 0 holds pixel frame 0, latent frame i > 0 the mean of pixel
    frames t(i - 1) + 1 .. ti, pooled over d x d pixels and mapped to the channels by a fixed random matrix; decoding
    maps back (pseudo-inverse), repeats pixels and frames. Cheap and deterministic, for the layouts whose real VAEs
    ComfyUI builds only at full size (Wan 2.2's, LTX-Video's, HunyuanVideo's)."""

    def __init__(self, channels: int = 16, downscale: int = 8, temporal: int = 4, seed: int = 0):
        self.latent_channels, self.temporal, self.scale = channels, temporal, downscale
        self.colours = torch.randn(3, channels, generator=torch.Generator().manual_seed(seed))
        self.downscale_ratio = (lambda a: max(0, (a + temporal - 1) // temporal), downscale, downscale)
        self.upscale_ratio = (lambda a: max(0, a * temporal - temporal + 1), downscale, downscale)
        self.downscale_index_formula = (temporal, downscale, downscale)
        self.upscale_index_formula = (temporal, downscale, downscale)

    def spacial_compression_encode(self):
        return self.scale

    def spacial_compression_decode(self):
        return self.scale

    def encode(self, pixels):
        frames = pixels[..., :3].float() * 2 - 1  # [T, H, W, 3]
        groups = [frames[:1]] + [frames[i : i + self.temporal] for i in range(1, len(frames), self.temporal)]
        pooled = torch.stack([group.mean(0) for group in groups]).permute(0, 3, 1, 2)  # [t, 3, H, W]
        pooled = torch.nn.functional.avg_pool2d(pooled, self.scale)
        return torch.einsum("tchw,cd->dthw", pooled, self.colours).unsqueeze(0)

    def decode(self, latents):
        colour = torch.einsum("bdthw,dc->bcthw", latents.float(), torch.linalg.pinv(self.colours))
        colour = colour.repeat_interleave(self.scale, -1).repeat_interleave(self.scale, -2)
        repeats = torch.tensor([1] + [self.temporal] * (latents.shape[2] - 1))
        frames = colour.repeat_interleave(repeats, dim=2)
        return ((frames + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1)  # [B, T, H, W, 3] like comfy.sd.VAE.decode


class StandInClipVision:
    """ComfyUI's CLIP_VISION interface (encode_image) giving a seeded 257 x 1280 penultimate state that follows the
    image's mean colour: clip_vision_h is fixed in size (632 M parameters), so no tiny one loads."""

    def __init__(self, seed: int = 0):
        self.basis = torch.randn(3, 257, 1280, generator=torch.Generator().manual_seed(seed)) * 0.1

    def encode_image(self, image, crop=True):
        import comfy.clip_vision

        output = comfy.clip_vision.Output()
        colour = image[..., :3].float().mean(dim=(1, 2))  # [B, 3]
        output["penultimate_hidden_states"] = torch.einsum("bc,cnd->bnd", colour, self.basis)
        return output
