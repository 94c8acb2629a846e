import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [TESTS, os.path.dirname(TESTS)]

from pack_import import import_pack  # noqa: E402

import_pack()


def pytest_configure(config):
    """Under pytest-xdist (the default: `-n auto` in pyproject.toml) every worker gets its share of the cores for
    torch's threads; the tiny models gain little from threads, and two workers of two threads each on two cores
    would fight over them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // workers))


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory):
    """A tiny random text-to-video model saved as a diffusers folder (safetensors)."""
    from tiny_models import save_tiny_text_to_video

    return save_tiny_text_to_video(str(tmp_path_factory.mktemp("models") / "tiny-t2v"))


@pytest.fixture(autouse=True)
def headless_folders(tmp_path, monkeypatch):
    """Every test writes into its own output folder and finds models in its own models folder."""
    monkeypatch.setenv("LONGVIDEO_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setenv("LONGVIDEO_MODELS_DIR", str(tmp_path / "models"))


@pytest.fixture(scope="module")
def comfyui_session():
    """For test modules that import the real ComfyUI (`pytestmark = pytest.mark.usefixtures("comfyui_session")`):
    after the module the session is headless again (comfy_env.leave_comfyui)."""
    yield
    import comfy_env

    comfy_env.leave_comfyui()
