"""Run in every worker rank before it imports ComfyUI ($LONGVIDEO_RANK_SETUP, set by the tests that send ComfyUI's
models to ranks): the torchvision stand-in the test process also uses (tests/comfy_env.py)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import comfy_env  # noqa: E402

comfy_env.install_torchvision_stand_in()
