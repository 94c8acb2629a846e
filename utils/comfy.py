"""The only bridge to ComfyUI.

Everything below `nodes/` asks this module for devices, folders, progress and cancellation. Inside
ComfyUI the answers come from ComfyUI (its model management, folder_paths, ProgressBar); headless they
come from plain torch, environment variables and tqdm. ComfyUI counts as present when its own start-up
has already imported `comfy.model_management` and `folder_paths`: this module never imports them on
its own initiative, so a headless run never triggers ComfyUI's import-time device set-up.
"""

import os
import sys

import torch

MODEL_FOLDER_NAME = "longvideo"
HEADLESS_OUTPUT_ENV = "LONGVIDEO_OUTPUT_DIR"
HEADLESS_MODELS_ENV = "LONGVIDEO_MODELS_DIR"
PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_WEIGHTS_FOLDER = os.path.join(PACK_ROOT, "weights")
# The embedded default model ships in the repository (tools/train_tiny_model.py made it); searched last everywhere.
PACK_CHECKPOINTS_FOLDER = os.path.join(PACK_ROOT, "checkpoints")
EMBEDDED_MODEL = "longvideo-shapes"


def in_comfyui() -> bool:
    return "comfy.model_management" in sys.modules and "folder_paths" in sys.modules


def _model_management():
    return sys.modules["comfy.model_management"]


def _folder_paths():
    return sys.modules["folder_paths"]


# ---------------------------------------------------------------------------------------------------
# devices


def compute_device() -> torch.device:
    """Where the networks run: ComfyUI's torch device, else CUDA, MPS or CPU."""
    if in_comfyui():
        return _model_management().get_torch_device()
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def offload_device() -> torch.device:
    """Where idle networks wait."""
    if in_comfyui():
        return _model_management().unet_offload_device()
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where node outputs (latents, conditioning, images) live between nodes."""
    if in_comfyui():
        return _model_management().intermediate_device()
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (bf16 where ComfyUI prefers it), fp32 elsewhere."""
    if device.type != "cuda":
        return torch.float32
    if in_comfyui() and _model_management().should_use_bf16(device):
        return torch.bfloat16
    return torch.float16


class ManagedModule:
    """An nn.Module whose placement on the compute device is decided by ComfyUI when it is present.

    Inside ComfyUI the module is wrapped once in a ModelPatcher and `load_models_gpu` moves it, which lets
    ComfyUI evict other models to make room for it and evict it when others need room. Headless it is
    simply moved to the compute device.
    """

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self._patcher = None

    def load(self) -> torch.device:
        """Put the module on the compute device and return that device."""
        if not in_comfyui():
            device = compute_device()
            self.module.to(device)
            return device
        management = _model_management()
        if self._patcher is None:
            from comfy.model_patcher import ModelPatcher

            # Named after the wrapped class so ComfyUI's log says what it loads.
            holder = type(type(self.module).__name__, (_PatchableHolder,), {})(self.module)
            self._patcher = ModelPatcher(holder, load_device=management.get_torch_device(), offload_device=offload_device())
        management.load_models_gpu([self._patcher])
        return self._patcher.load_device


class _PatchableHolder(torch.nn.Module):
    """ModelPatcher assigns `.device` on the module it manages; diffusers and transformers models make that a
    read-only property, so they are handed over inside this plain module."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner


def load_comfy_diffusion_model(path: str):
    """ComfyUI's MODEL (a ModelPatcher) of a diffusion model file, as Load Diffusion Model (UNETLoader) loads it."""
    import comfy.sd

    return comfy.sd.load_diffusion_model(path)


def wan21_latent_statistics() -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and standard deviation ComfyUI's Wan 2.1 latent format normalises latents with (its
    process_in), each [1, 16, 1, 1, 1]. Imports ComfyUI's latent formats: call it where ComfyUI is loaded."""
    from comfy.latent_formats import Wan21

    latent_format = Wan21()
    return latent_format.latents_mean.float(), latent_format.latents_std.float()


# The usual ComfyUI sampler and sigma schedule names, for node menus when ComfyUI itself is not there to ask.
USUAL_COMFY_SAMPLERS = ("euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "uni_pc", "uni_pc_bh2", "ddim", "lcm")
USUAL_COMFY_SCHEDULES = ("simple", "normal", "karras", "exponential", "sgm_uniform", "ddim_uniform", "beta", "linear_quadratic")


def comfy_sampling_names() -> tuple[list[str], list[str]]:
    """ComfyUI's sampler names and sigma schedule names (its KSampler's menus); the usual ones headless."""
    if in_comfyui():
        import comfy.samplers

        return list(comfy.samplers.KSampler.SAMPLERS), list(comfy.samplers.KSampler.SCHEDULERS)
    return list(USUAL_COMFY_SAMPLERS), list(USUAL_COMFY_SCHEDULES)


# ---------------------------------------------------------------------------------------------------
# progress and cancellation


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed cancel; headless, Ctrl+C does this."""
    if in_comfyui():
        _model_management().throw_exception_if_processing_interrupted()


class Progress:
    """Counts work units: ComfyUI's ProgressBar in the UI (its update is also a cancel point), tqdm headless."""

    def __init__(self, total: int, description: str = ""):
        self.total = max(int(total), 1)
        self.done = 0
        if in_comfyui():
            import comfy.utils

            self._bar = comfy.utils.ProgressBar(self.total)
            self._tqdm = None
        else:
            from tqdm.auto import tqdm

            self._bar = None
            self._tqdm = tqdm(total=self.total, desc=description or None, leave=False, dynamic_ncols=True)

    def update(self, count: int = 1) -> None:
        self.done = min(self.done + count, self.total)
        if self._bar is not None:
            self._bar.update_absolute(self.done, self.total)
        else:
            self._tqdm.update(count)
        throw_if_interrupted()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------------
# folders


def output_directory() -> str:
    """ComfyUI's output folder; headless, $LONGVIDEO_OUTPUT_DIR or ./output."""
    if in_comfyui():
        return _folder_paths().get_output_directory()
    return os.path.abspath(os.environ.get(HEADLESS_OUTPUT_ENV) or "output")


def register_model_folder() -> None:
    """Add the pack's own model folder (models/longvideo) to ComfyUI's folder_paths, keeping user entries."""
    if not in_comfyui():
        return
    folder_paths = _folder_paths()
    folder_paths.add_model_folder_path(MODEL_FOLDER_NAME, os.path.join(folder_paths.models_dir, MODEL_FOLDER_NAME))


def model_search_folders() -> list[str]:
    """Folders searched for diffusers-format model folders, in order.

    In ComfyUI: models/diffusers, then models/longvideo. Headless: $LONGVIDEO_MODELS_DIR (os.pathsep-separated),
    else the pack's own weights/ folder. Last, always, the pack's checkpoints/ folder with the embedded model, so a
    model of the same name in a user folder comes first.
    """
    if in_comfyui():
        folder_paths = _folder_paths()
        folders = list(folder_paths.get_folder_paths("diffusers"))
        if MODEL_FOLDER_NAME in folder_paths.folder_names_and_paths:
            folders += folder_paths.get_folder_paths(MODEL_FOLDER_NAME)
        return folders + [PACK_CHECKPOINTS_FOLDER]
    configured = os.environ.get(HEADLESS_MODELS_ENV)
    if configured:
        return [os.path.abspath(p) for p in configured.split(os.pathsep) if p] + [PACK_CHECKPOINTS_FOLDER]
    return [PACK_WEIGHTS_FOLDER, PACK_CHECKPOINTS_FOLDER]


def _model_tree(folder: str):
    """os.walk over one search folder that does not descend into diffusers model folders; yields
    (root, files, is_model_folder)."""
    for root, dirs, files in os.walk(folder, followlinks=True):
        is_model_folder = "model_index.json" in files or "unet" in dirs
        dirs[:] = [] if is_model_folder else sorted(d for d in dirs if not d.startswith("."))
        yield root, files, is_model_folder


def _relative_name(path: str, folder: str) -> str:
    return os.path.relpath(path, folder).replace(os.sep, "/")


def list_model_folders() -> list[str]:
    """Names of the model folders (those holding a model_index.json or a unet/ folder) in the search folders."""
    return sorted({_relative_name(root, folder) for folder in model_search_folders() if os.path.isdir(folder)
                   for root, _, is_model_folder in _model_tree(folder) if is_model_folder})


def list_model_files(extensions: tuple[str, ...]) -> list[str]:
    """Names of single-file checkpoints ending in `extensions` in the search folders, outside diffusers model folders.
    The pack's own checkpoints/ folder is left out: its single files (the causal VAE of longvideo-shapes-wan) are parts
    of the pack's models, not checkpoints a loader should offer."""
    folders = [folder for folder in model_search_folders() if folder != PACK_CHECKPOINTS_FOLDER]
    return sorted({_relative_name(os.path.join(root, name), folder) for folder in folders if os.path.isdir(folder)
                   for root, files, is_model_folder in _model_tree(folder) if not is_model_folder
                   for name in files if name.endswith(extensions)})


def find_model_folder(name: str) -> str | None:
    """Full path of a model folder given by name (as listed) or by path; None when there is none."""
    return _find_in_search_folders(name, os.path.isdir)


def find_model_file(name: str) -> str | None:
    """Full path of a checkpoint file given by name (as listed) or by path; None when there is none."""
    return _find_in_search_folders(name, os.path.isfile)


def _find_in_search_folders(name: str, exists) -> str | None:
    if os.path.isabs(name) or exists(name):
        return os.path.abspath(name) if exists(name) else None
    for folder in model_search_folders():
        candidate = os.path.join(folder, name)
        if exists(candidate):
            return candidate
    return None
