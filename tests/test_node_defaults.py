"""What a fresh node shows in ComfyUI: defaults that fit the default model, loaders whose combos list only what
they can load (never a sentence), typed paths that work whatever the combo holds, and the polish every node
carries (categories by stage, output names and tooltips)."""

import json
import os
import shutil

import pytest

from longvideo import NODE_CLASS_MAPPINGS
from longvideo.utils.workflow import WorkflowError, validate_workflow
from tiny_models import save_tiny_vdp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED = os.path.join(ROOT, "checkpoints", "longvideo-shapes")
SIZED_NODES = ("LongVideoEmptyLatent", "LongVideoContinuationSampler", "LongVideoHierarchicalSampler",
               "LongVideoDistributedSampler")
STEPPED_NODES = ("LongVideoSampler", "LongVideoContinuationSampler", "LongVideoHierarchicalSampler",
                 "LongVideoDistributedSampler", "LongVideoLatentInterpolate")
STAGES = ("loaders", "conditioning", "sampling", "model_patches", "latent", "video")


def inputs(class_type: str) -> dict:
    types = NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()
    return {**types.get("required", {}), **types.get("optional", {})}


def embedded_frame_size() -> int:
    with open(os.path.join(EMBEDDED, "unet", "config.json")) as unet, open(os.path.join(EMBEDDED, "vae", "config.json")) as vae:
        sample_size = json.load(unet)["sample_size"]
        downscale = 2 ** (len(json.load(vae)["block_out_channels"]) - 1)
    return sample_size * downscale


def embedded_steps() -> int:
    """The steps the embedded model is documented and shipped with: every shipped workflow's samplers use them."""
    return 20


@pytest.mark.parametrize("class_type", SIZED_NODES)
def test_fresh_nodes_make_frames_of_the_default_models_size(class_type):
    size = embedded_frame_size()
    assert size == 64
    assert inputs(class_type)["width"][1]["default"] == size
    assert inputs(class_type)["height"][1]["default"] == size


@pytest.mark.parametrize("class_type", STEPPED_NODES)
def test_fresh_samplers_take_the_default_models_steps(class_type):
    assert inputs(class_type)["steps"][1]["default"] == embedded_steps()


def test_the_model_loader_defaults_to_the_embedded_model():
    assert inputs("LongVideoModelLoader")["model"][1]["default"] == "longvideo-shapes"


def write_upscaler_folder(folder):
    """The configs by which a latent upscaler folder is told apart (weights are not read to list it)."""
    os.makedirs(os.path.join(folder, "unet"))
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionLatentUpscalePipeline"}, f)
    with open(os.path.join(folder, "unet", "config.json"), "w") as f:
        json.dump({"_class_name": "UNet2DConditionModel"}, f)


def test_the_upscaler_loader_lists_only_latent_upscalers(tmp_path, monkeypatch, tiny_model_folder):
    models = tmp_path / "listed"
    shutil.copytree(tiny_model_folder, models / "some-text-to-video")
    write_upscaler_folder(str(models / "sd-x2-latent-upscaler"))
    monkeypatch.setenv("LONGVIDEO_MODELS_DIR", str(models))
    assert "some-text-to-video" in inputs("LongVideoModelLoader")["model"][0]
    assert "longvideo-shapes" in inputs("LongVideoModelLoader")["model"][0]
    assert inputs("LongVideoLatentUpscaleModelLoader")["model"][0] == ["sd-x2-latent-upscaler"]


@pytest.mark.parametrize("class_type, combo, path_input", [
    ("LongVideoVDPLoader", "checkpoint", "checkpoint_path"),
    ("LongVideoInfiNetLoader", "infinet", "infinet_path"),
    ("LongVideoLatentUpscaleModelLoader", "model", "model_path"),
])
def test_loaders_with_nothing_found_show_a_word_and_take_a_typed_path(class_type, combo, path_input, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGVIDEO_MODELS_DIR", str(tmp_path / "empty"))
    choices = inputs(class_type)[combo][0]
    assert choices == ["none"]
    validate = NODE_CLASS_MAPPINGS[class_type].VALIDATE_INPUTS
    assert validate(**{combo: "none", path_input: "/somewhere/typed"}) is True
    assert validate(**{combo: "from-another-machine.pt", path_input: "/somewhere/typed"}) is True
    refused = validate(**{combo: "none", path_input: ""})
    assert isinstance(refused, str) and class_type in refused and path_input in refused
    refused = validate(**{combo: "from-another-machine.pt", path_input: ""})
    assert isinstance(refused, str) and "from-another-machine.pt" in refused


def test_a_typed_vdp_path_runs_whatever_the_combo_holds(tmp_path, monkeypatch):
    """As ComfyUI does (VALIDATE_INPUTS replaces its 'Value not in list' check), the headless validator accepts a
    combo value that is not listed when a path is typed, and the node loads the typed file."""
    monkeypatch.setenv("LONGVIDEO_MODELS_DIR", str(tmp_path / "empty"))
    os.makedirs(tmp_path / "elsewhere")
    checkpoint = save_tiny_vdp(str(tmp_path / "elsewhere" / "tiny.pt"))
    node = {"class_type": "LongVideoVDPLoader",
            "inputs": {"checkpoint": "model-10.pt", "dtype": "auto", "weights": "ema", "checkpoint_path": checkpoint}}
    save = {"class_type": "LongVideoSaveVideo", "inputs": {"filename_prefix": "x", "fps": 8.0, "format": "mp4", "crf": 19}}
    validate_workflow({"1": node, "2": save}, NODE_CLASS_MAPPINGS)
    model, vae = NODE_CLASS_MAPPINGS["LongVideoVDPLoader"]().load(**node["inputs"])
    assert model.latent_channels == 3 and vae.downscale == 1
    untyped = {**node, "inputs": {**node["inputs"], "checkpoint_path": ""}}
    with pytest.raises(WorkflowError, match="model-10.pt"):
        validate_workflow({"1": untyped, "2": save}, NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("class_type", sorted(NODE_CLASS_MAPPINGS))
def test_every_node_has_a_stage_category_and_explained_outputs(class_type):
    cls = NODE_CLASS_MAPPINGS[class_type]
    assert cls.CATEGORY.split("/") == ["LongVideo", cls.CATEGORY.split("/")[-1]] and cls.CATEGORY.split("/")[-1] in STAGES
    returns = tuple(cls.RETURN_TYPES)
    if not returns:
        return
    assert len(cls.OUTPUT_TOOLTIPS) == len(returns) and all(tip.strip() for tip in cls.OUTPUT_TOOLTIPS)
    names = cls.RETURN_NAMES
    assert len(names) == len(returns) and all(name == name.lower() and " " not in name for name in names)
