"""Every shipped workflow matches the node definitions, and the text-to-video one runs headless."""

import glob
import json
import os
import shutil
import subprocess
import sys

import importlib.util

import av
import pytest

from longvideo import NODE_CLASS_MAPPINGS
from longvideo.utils.video_io import VIDEO_FORMATS
from longvideo.utils.workflow import WorkflowError, is_ui_format, load_workflow, run_workflow, ui_to_api, validate_workflow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "api", "*.json")))
UI_WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
# The workflows name the embedded model; a tiny random one of the same name in the test's models folder comes first
# (user folders are searched before the pack's checkpoints/), so these tests check the graphs, fast, whatever the
# shipped weights are. tests/test_train_tiny_model.py checks the shipped model itself.
MODEL_NAME = "longvideo-shapes"


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_ui_workflows", os.path.join(ROOT, "tools", "build_ui_workflows.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _load_builder()  # the UI files (ComfyUI templates) have readable names: builder.ui_path(api file)


@pytest.fixture(scope="session")
def tiny_known_frames_folder(tiny_model_folder, tmp_path_factory):
    """The tiny model with its UNet widened to take known frames, as the embedded model's is (the workflows use
    'learned')."""
    from diffusers import UNet3DConditionModel

    from longvideo.tools.train_tiny_model import widen_for_known_frames

    folder = tmp_path_factory.mktemp("models") / MODEL_NAME
    shutil.copytree(tiny_model_folder, folder)
    widen_for_known_frames(UNet3DConditionModel.from_pretrained(str(folder / "unet"))).save_pretrained(str(folder / "unet"))
    return folder


@pytest.fixture
def models_dir(tiny_known_frames_folder, tmp_path, monkeypatch):
    folder = tmp_path / "shipped-models"
    shutil.copytree(tiny_known_frames_folder, folder / MODEL_NAME)
    monkeypatch.setenv("LONGVIDEO_MODELS_DIR", str(folder))
    return folder


def test_every_workflow_comes_in_both_formats():
    assert API_WORKFLOWS, "no workflows shipped"
    assert sorted(builder.ui_path(p) for p in API_WORKFLOWS) == UI_WORKFLOWS


@pytest.mark.parametrize("path", API_WORKFLOWS + UI_WORKFLOWS, ids=os.path.basename)
def test_workflow_matches_node_definitions(path, models_dir):
    validate_workflow(load_workflow(path, NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("api_path", API_WORKFLOWS, ids=os.path.basename)
def test_ui_workflow_is_the_api_workflow(api_path, models_dir):
    ui = json.load(open(builder.ui_path(api_path)))
    assert is_ui_format(ui)
    api = json.load(open(api_path))
    converted = ui_to_api(ui, NODE_CLASS_MAPPINGS)
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in converted.items()} == {
        k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()
    }


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "run_workflow.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def with_two_steps(api: dict) -> dict:
    """The workflow with every sampling node cut to 2 steps, so that each one runs in seconds."""
    return {key: {**node, "inputs": {**node["inputs"], **({"steps": 2} if "steps" in node["inputs"] else {})}}
            for key, node in api.items()}


def frames_in(value) -> int:
    """Frames of a LATENT ({"samples": [B, C, T, H, W]}, batches saved one after another) or an IMAGE ([frames, H, W, 3])."""
    return value["samples"].shape[0] * value["samples"].shape[2] if isinstance(value, dict) else value.shape[0]


def saved_videos(ui: dict, out) -> list[str]:
    """The videos the nodes saved (a report node's plot, a PNG, is not one)."""
    return [os.path.join(out, entry["subfolder"], entry["filename"]) for node_ui in ui.values() for entry in node_ui["images"]
            if entry["filename"].rsplit(".", 1)[-1] in VIDEO_FORMATS]


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=os.path.basename)
def test_workflow_runs_headless(path, models_dir, tmp_path, monkeypatch):
    """Every workflow runs end to end; each saved video has exactly the frames its graph handed to the save node."""
    out = tmp_path / "videos"
    monkeypatch.setenv("LONGVIDEO_OUTPUT_DIR", str(out))
    api = with_two_steps(load_workflow(path, NODE_CLASS_MAPPINGS))
    outputs = {}
    ui = run_workflow(api, NODE_CLASS_MAPPINGS, on_node_done=lambda node_id, _, returned: outputs.__setitem__(node_id, returned))
    videos = saved_videos(ui, out)
    saves = [node for node in api.values() if node["class_type"] == "LongVideoSaveVideo"]
    assert saves and len(videos) == len(saves)
    for video, save in zip(videos, saves):
        source = save["inputs"].get("images") or save["inputs"]["samples"]
        with av.open(video) as container:
            stream = container.streams.video[0]
            assert sum(1 for _ in container.decode(stream)) == frames_in(outputs[str(source[0])][source[1]])


def test_ui_workflow_runs_from_the_command_line(models_dir, tmp_path):
    path = builder.ui_path(os.path.join(ROOT, "workflows", "api", "text_to_video.json"))
    api = load_workflow(path, NODE_CLASS_MAPPINGS)
    sampler = next(key for key, node in api.items() if node["class_type"] == "LongVideoSampler")
    out = tmp_path / "videos"
    result = run_cli(path, "--output-dir", str(out), "--models-dir", str(models_dir), "--set", f"{sampler}.steps=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = result.stdout.strip().splitlines()
    assert len(written) == 1 and written[0].endswith("text_to_video_00001.mp4")
    with av.open(written[0]) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, float(stream.average_rate)) == (64, 64, 8.0)
        assert sum(1 for _ in container.decode(stream)) == api[next(k for k, n in api.items() if n["class_type"] == "LongVideoEmptyLatent")]["inputs"]["frames"]


def test_unknown_node_is_a_clear_error(tmp_path):
    workflow = tmp_path / "bad.json"
    workflow.write_text(json.dumps({"1": {"class_type": "LongVideoTeleport", "inputs": {}}}))
    with pytest.raises(WorkflowError, match="LongVideoTeleport"):
        validate_workflow(load_workflow(str(workflow), NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS)
    result = run_cli(str(workflow), "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2 and "LongVideoTeleport" in result.stderr
    assert not (tmp_path / "out").exists()
