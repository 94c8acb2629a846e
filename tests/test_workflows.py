"""Every shipped workflow matches the node definitions, and the text-to-video one runs headless."""

import glob
import json
import os
import shutil
import subprocess
import sys

import av
import pytest

from longvideo import NODE_CLASS_MAPPINGS
from longvideo.sampling.continuation import ContinuationSettings, known_frame_counts
from longvideo.utils.workflow import WorkflowError, is_ui_format, load_workflow, ui_to_api, validate_workflow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "api", "*.json")))
UI_WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
MODEL_NAME = "tiny-random-t2v"


@pytest.fixture
def models_dir(tiny_model_folder, tmp_path, monkeypatch):
    folder = tmp_path / "shipped-models"
    shutil.copytree(tiny_model_folder, folder / MODEL_NAME)
    monkeypatch.setenv("LONGVIDEO_MODELS_DIR", str(folder))
    return folder


def test_every_workflow_comes_in_both_formats():
    assert API_WORKFLOWS, "no workflows shipped"
    assert [os.path.basename(p) for p in API_WORKFLOWS] == [os.path.basename(p) for p in UI_WORKFLOWS]


@pytest.mark.parametrize("path", API_WORKFLOWS + UI_WORKFLOWS, ids=os.path.basename)
def test_workflow_matches_node_definitions(path, models_dir):
    validate_workflow(load_workflow(path, NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=os.path.basename)
def test_ui_workflow_is_the_api_workflow(path, models_dir):
    ui = json.load(open(path))
    assert is_ui_format(ui)
    api = json.load(open(os.path.join(ROOT, "workflows", "api", os.path.basename(path))))
    converted = ui_to_api(ui, NODE_CLASS_MAPPINGS)
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in converted.items()} == {
        k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()
    }


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "run_workflow.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def frames_of(api: dict, chunk_frames: dict) -> int:
    """Frames the workflow's video should have (a continuation draws its conditioning counts per chunk)."""
    for node in api.values():
        if node["class_type"] == "LongVideoEmptyLatent":
            return node["inputs"]["frames"]
    return chunk_frames["total"]


SAMPLERS = ("LongVideoSampler", "LongVideoContinuationSampler")


@pytest.mark.parametrize("path", API_WORKFLOWS + [os.path.join(ROOT, "workflows", "text_to_video.json")], ids=os.path.relpath)
def test_workflow_runs_headless(path, models_dir, tmp_path):
    api = load_workflow(path, NODE_CLASS_MAPPINGS)
    sampler = next(key for key, node in api.items() if node["class_type"] in SAMPLERS)
    chunk_frames = {}
    if api[sampler]["class_type"] == "LongVideoContinuationSampler":
        inputs = api[sampler]["inputs"]
        settings = ContinuationSettings(inputs["frames_per_chunk"], inputs["chunks"], inputs["min_conditioning_frames"],
                                        inputs["max_conditioning_frames"])
        counts = known_frame_counts(settings, inputs["seed"], 0)
        chunk_frames["total"] = sum(settings.frames_per_chunk - k for k in counts)
    out = tmp_path / "videos"
    result = run_cli(path, "--output-dir", str(out), "--models-dir", str(models_dir), "--set", f"{sampler}.steps=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = result.stdout.strip().splitlines()
    assert len(written) == 1 and written[0].endswith(f"{os.path.basename(path)[:-5]}_00001.mp4")
    with av.open(written[0]) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, float(stream.average_rate)) == (64, 64, 8.0)
        assert sum(1 for _ in container.decode(stream)) == frames_of(api, chunk_frames)


def test_unknown_node_is_a_clear_error(tmp_path):
    workflow = tmp_path / "bad.json"
    workflow.write_text(json.dumps({"1": {"class_type": "LongVideoTeleport", "inputs": {}}}))
    with pytest.raises(WorkflowError, match="LongVideoTeleport"):
        validate_workflow(load_workflow(str(workflow), NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS)
    result = run_cli(str(workflow), "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2 and "LongVideoTeleport" in result.stderr
    assert not (tmp_path / "out").exists()
