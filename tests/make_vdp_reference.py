"""Write tests/data/vdp_reference*.safetensors with lucidrains' video-diffusion-pytorch itself (not run by pytest).

    pip install --no-deps --target /tmp/vdp_env video-diffusion-pytorch==0.7.0 einops einops-exts rotary-embedding-torch
    PYTHONPATH=/tmp/vdp_env python tests/make_vdp_reference.py

torchvision (used only by the original's trainer and gif helpers) is stubbed, never installed. What is stored:

- vdp_reference_model.safetensors: a tiny GaussianDiffusion (50 cosine steps) state dict in the original's layout;
- vdp_reference.safetensors: `cond`, the sample of `GaussianDiffusion.sample(cond, cond_scale=2.5)` after
  torch.manual_seed(11) (the original draws from torch's global generator), and Unet3D outputs with
  focus_present_mask all set, partly set and unset.
"""

import os
import sys
import types

import torch
from safetensors.torch import save_file

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SEED, STEPS, COND_SCALE, SHAPE = 11, 50, 2.5, (2, 3, 4, 8, 8)  # batch 2, 3 channels, 4 frames, 8 x 8


def original_module():
    stubs = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.transforms", "torchvision.utils")}
    stubs["torchvision"].transforms, stubs["torchvision"].utils = stubs["torchvision.transforms"], stubs["torchvision.utils"]
    stubs["torchvision.transforms"].ToTensor = lambda: None
    sys.modules.update(stubs)
    import video_diffusion_pytorch.video_diffusion_pytorch as original

    original.tqdm = lambda iterable, **_: iterable
    return original


def main():
    original = original_module()
    torch.manual_seed(0)
    unet = original.Unet3D(dim=8, dim_mults=(1, 2), cond_dim=4, attn_heads=2, attn_dim_head=8).eval()
    with torch.no_grad():
        for parameter in unet.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    diffusion = original.GaussianDiffusion(unet, image_size=SHAPE[-1], num_frames=SHAPE[2], channels=SHAPE[1], timesteps=STEPS).eval()
    cond = torch.randn(SHAPE[0], 4, generator=torch.Generator().manual_seed(5))

    torch.manual_seed(SEED)
    sample = diffusion.sample(cond=cond, cond_scale=COND_SCALE)

    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(6))
    time = torch.tensor([3, 41])
    with torch.no_grad():
        outputs = {f"focus_{name}": unet(x, time, cond=cond, focus_present_mask=torch.tensor(mask))
                   for name, mask in (("all", [True, True]), ("second", [False, True]), ("none", [False, False]))}

    state = {key: value.detach().clone().contiguous() for key, value in diffusion.state_dict().items()}  # rotary freqs are shared
    save_file(state, os.path.join(DATA, "vdp_reference_model.safetensors"))
    save_file({"cond": cond, "sample": sample.contiguous(), "x": x, "time": time, **outputs},
              os.path.join(DATA, "vdp_reference.safetensors"),
              metadata={"seed": str(SEED), "steps": str(STEPS), "cond_scale": str(COND_SCALE), "package": "video-diffusion-pytorch 0.7.0"})
    print("sample range", float(sample.min()), float(sample.max()))


if __name__ == "__main__":
    main()
