"""Entry of a clip-parallel worker process, run by distributed_launch.run_ranks through runpy.run_path.

A spawned worker cannot import this pack by module name (ComfyUI imports it under its folder's name, from a
path), so this file loads the pack from its own location, then hands over to `worker_main`.
"""

import importlib
import importlib.util
import os

if __name__ == "__longvideo_worker__":
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _spec = importlib.util.spec_from_file_location("_longvideo_pack_import", os.path.join(_root, "pack_import.py"))
    _pack_import = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_pack_import)
    _package = _pack_import.import_pack()
    _launch = importlib.import_module(f"{_package.__name__}.sampling.distributed_launch")
    _launch.worker_main(**WORKER_ARGUMENTS, package=_package)  # noqa: F821 (given by runpy.run_path)
