"""ComfyUI's own models split over worker ranks (gloo processes on the CPU) against the real ComfyUI: every rank
rebuilds the model as the user built it (patches and model sampling included), and the video is the one-process video.
"""

import pytest
import torch

import comfy_env

pytestmark = pytest.mark.usefixtures("comfyui_session")

CFG = 4.0


@pytest.fixture(autouse=True)
def rank_setup(monkeypatch):
    """Ranks import ComfyUI too: give them the test process's torchvision stand-in."""
    import os

    monkeypatch.setenv("LONGVIDEO_RANK_SETUP", os.path.join(os.path.dirname(os.path.abspath(__file__)), "rank_setup.py"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(plain, patched) tiny Wan 2.1 MODELs, loaded under inference mode as ComfyUI's executor loads them; the patched
    one has ModelSamplingSD3's shift and a LoRA-like weight patch, as a user's LoraLoader and ModelSamplingSD3 make."""
    comfy_env.comfyui_or_skip()
    import comfy.sd
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    path = comfy_env.save_tiny_wan21(str(tmp_path_factory.mktemp("ranks") / "tiny_wan21.safetensors"))
    with torch.inference_mode():
        plain = comfy.sd.load_diffusion_model(path)
        patched = ModelSamplingSD3().patch(plain, 5.0)[0]
    key = "diffusion_model.head.head.weight"
    patched.add_patches({key: (torch.full_like(patched.model.state_dict()[key], 0.05),)}, 1.0)
    return plain, patched


def text(seed):
    return [[torch.randn(1, 5, 4096, generator=torch.Generator().manual_seed(seed)), {}]]


def hierarchical(model, devices="", **adapter):
    from longvideo.nodes.comfy_models import FROM_NODE, LongVideoComfyModel
    from longvideo.nodes.hierarchy import LongVideoHierarchicalSampler

    with torch.inference_mode():
        adapted = LongVideoComfyModel().adapt(model, "simple", FROM_NODE, **adapter)[0]
        return LongVideoHierarchicalSampler().sample(adapted, [text(1), text(2)], text(3), "timeline", 16, 16, 3, 2,
                                                     "replace", 1, 2, CFG, "euler", 1, devices=devices)[0]["samples"]


@pytest.mark.parametrize("ranks", [2, 3])
def test_a_patched_wan_over_ranks_is_the_patched_one_process_video(models, ranks):
    plain, patched = models
    one = hierarchical(patched)
    split = hierarchical(patched, ", ".join(["cpu"] * ranks))
    assert split.shape == one.shape == (1, 16, 5, 2, 2) and torch.isfinite(split).all()
    assert (split - one).abs().max() <= 1e-5
    assert (hierarchical(plain) - one).abs().max() > 1e-2  # the patches matter, and the ranks kept them


def test_wan22_experts_go_to_the_ranks(models):
    plain, patched = models
    one = hierarchical(patched, low_noise_model=plain, switch_step=1)
    assert (one - hierarchical(patched)).abs().max() > 1e-3  # the low-noise expert samples the last step
    assert (hierarchical(patched, "cpu, cpu", low_noise_model=plain, switch_step=1) - one).abs().max() <= 1e-5


def test_what_cannot_reach_another_process_is_refused_by_name(models):
    from longvideo.nodes.common import NodeInputError

    _, patched = models
    wrapped = patched.clone()
    wrapped.set_model_unet_function_wrapper(lambda apply, options: apply(options["input"], options["timestep"], **options["c"]))
    with pytest.raises(NodeInputError, match="LongVideoHierarchicalSampler: 'model' on several devices: 'model' carries "
                                             "something from the nodes that patched it that cannot be sent"):
        hierarchical(wrapped, "cpu, cpu")
    assert (hierarchical(wrapped) - hierarchical(patched)).abs().max() <= 1e-6  # on one device it runs as patched
