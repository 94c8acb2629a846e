import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [TESTS, os.path.dirname(TESTS)]

from pack_import import import_pack  # noqa: E402

import_pack()


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
