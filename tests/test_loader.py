import json
import os
import shutil

import pytest
import torch

from longvideo.models.loader import ModelLoadError
from longvideo.nodes.common import NodeInputError
from longvideo.nodes.loaders import LongVideoModelLoader


def load(model="", model_path="", dtype="fp32"):
    return LongVideoModelLoader().load(model=model, dtype=dtype, model_path=model_path)


def copy_model(folder, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def test_loader_lists_and_loads_from_the_models_folder(tiny_model_folder, tmp_path, monkeypatch):
    models = tmp_path / "models"
    copy_model(tiny_model_folder, models, "tiny-t2v")
    monkeypatch.setenv("LONGVIDEO_MODELS_DIR", str(models))
    options = LongVideoModelLoader.INPUT_TYPES()["required"]["model"][0]
    assert options == ["longvideo-shapes", "tiny-t2v"]  # the embedded model is always offered
    model, clip, vae = load(model="tiny-t2v")
    assert model.latent_channels == 4 and model.context_width == clip.width == 32
    assert vae.downscale == 8 and vae.scaling_factor == pytest.approx(0.18215)
    assert model.unet.dtype == torch.float32


def test_loader_takes_a_typed_path_and_dtype(tiny_model_folder):
    model, clip, vae = load(model_path=tiny_model_folder, dtype="bf16")
    assert model.unet.dtype == clip.text_model.dtype == vae.vae.dtype == torch.bfloat16


def test_loader_reads_bin_weights(tmp_path):
    from tiny_models import save_tiny_text_to_video

    folder = save_tiny_text_to_video(str(tmp_path / "bin-model"), safe_serialization=False)
    assert os.path.exists(os.path.join(folder, "unet", "diffusion_pytorch_model.bin"))
    reference, _, _ = load(model_path=save_tiny_text_to_video(str(tmp_path / "st-model")))
    model, _, _ = load(model_path=folder)
    for (name, value), (_, expected) in zip(model.unet.state_dict().items(), reference.unet.state_dict().items()):
        assert torch.equal(value, expected), name


def test_missing_model_names_the_input(tmp_path):
    with pytest.raises(NodeInputError, match="model '.*nowhere' was not found.*model_path"):
        load(model_path=str(tmp_path / "nowhere"))


def test_folder_without_unet_is_rejected(tiny_model_folder, tmp_path):
    folder = copy_model(tiny_model_folder, tmp_path)
    shutil.rmtree(folder / "unet")
    with pytest.raises(ModelLoadError, match="has no unet/ subfolder"):
        load(model_path=str(folder))


def test_corrupt_safetensors_names_the_file(tiny_model_folder, tmp_path):
    folder = copy_model(tiny_model_folder, tmp_path)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"unet/diffusion_pytorch_model.safetensors is corrupt or truncated"):
        load(model_path=str(folder))


def test_image_model_folder_is_rejected(tiny_model_folder, tmp_path):
    folder = copy_model(tiny_model_folder, tmp_path)
    config_file = folder / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    config["_class_name"] = "UNet2DConditionModel"
    config_file.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="UNet2DConditionModel model.*needs a text-to-video UNet3DConditionModel"):
        load(model_path=str(folder))


def test_missing_weights_are_named(tiny_model_folder, tmp_path):
    folder = copy_model(tiny_model_folder, tmp_path)
    os.remove(folder / "vae" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ModelLoadError, match="vae holds no weights"):
        load(model_path=str(folder))


def test_unknown_dtype_is_rejected(tiny_model_folder):
    with pytest.raises(ModelLoadError, match="dtype 'fp8'"):
        load(model_path=tiny_model_folder, dtype="fp8")
