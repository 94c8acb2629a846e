"""ComfyUI's models on worker ranks: each rank rebuilds the model as the user built it, in its own process.

A worker process is spawned empty, and ComfyUI's MODEL does not pickle as it is (its model sampling is an instance of
a class made inside a function; patches hold closures only sometimes). So the model travels in parts:

- the diffusion model's weights as they were loaded (a tensor dict: shared memory, not copied through a pipe), which
  the rank turns into ComfyUI's model again with ComfyUI's own loader (comfy.sd.load_diffusion_model_state_dict, as
  UNETLoader does), in the dtype it had;
- what the user applied on top, unchanged: the patches (LoRAs: applied by ComfyUI's model management when the rank
  loads the model onto its GPU, as in one process), the object patches (ModelSamplingSD3's shift, ...), the model
  options (transformer options, wrappers, callbacks), pickled; an instance of a class made inside a function is sent
  as its class's bases and its state. What cannot be pickled (a lambda a custom node put into the model options) is
  refused by name before any worker starts;
- the VAE and CLIP vision (method 'learned') as their weights, rebuilt by ComfyUI's VAE and CLIP vision loaders;
- Wan 2.2 A14B's low-noise expert like the model, with the switch.

Before the ranks start, ComfyUI's loaded models are unloaded in this process (the ranks take the GPUs; the weights
are then on the CPU without patches applied). Each rank then holds the whole model on its device, as one process
does; while starting, a rank holds one CPU copy of the weights (ComfyUI's loader copies them into its model), and the
ranks load one after another so that at most one such copy exists at a time.

Every `comfy` import is inside a function.
"""

import importlib
import io
import os
import pickle
import runpy
import sys

import torch

# A Python file run in every rank before ComfyUI is imported (the tests' torchvision stand-in, for example).
RANK_SETUP_ENV = "LONGVIDEO_RANK_SETUP"


def comfy_rank_model(denoiser) -> dict:
    """The ComfyDenoiser `denoiser` as plain data for worker ranks (build_comfy_rank_model rebuilds it)."""
    import comfy.cli_args
    import comfy.model_management

    comfy.model_management.unload_all_models()
    experts = denoiser.experts
    return {
        "kind": "comfy", "comfyui": os.path.dirname(os.path.dirname(os.path.abspath(comfy.model_management.__file__))),
        "args": portable_dumps(vars(comfy.cli_args.args)),
        "model": _model_part(denoiser.patcher, "model"),
        "low_noise": None if experts is None else _model_part(experts.low, "low_noise_model"),
        "boundary": None if experts is None else experts.boundary,
        "switch_step": 0 if experts is None else experts.switch_step,
        "sigma_schedule": denoiser.sigma_schedule, "sampler": denoiser.sampler,
        "vae": _weights_of(denoiser.vae, dtype=str(getattr(denoiser.vae, "vae_dtype", ""))),
        "clip_vision": _weights_of(denoiser.clip_vision),
    }


def _weights_of(model, **facts) -> dict | None:
    """A VAE's or CLIP vision model's weights (ComfyUI's loaders rebuild them from these), or None."""
    if model is None or not hasattr(model, "get_sd"):
        return None
    return {"weights": model.get_sd(), **facts}


def _model_part(patcher, name: str) -> dict:
    applied = {"patches": patcher.patches, "object_patches": patcher.object_patches,
               "weight_wrapper_patches": patcher.weight_wrapper_patches, "model_options": patcher.model_options,
               "wrappers": patcher.wrappers, "callbacks": patcher.callbacks}
    try:
        options = portable_dumps(applied)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise ValueError(f"'{name}' carries something from the nodes that patched it that cannot be sent to another "
                         f"process ({error}): run on one device (devices empty), or leave out the node that adds it") from None
    return {"weights": patcher.model.diffusion_model.state_dict(), "dtype": str(patcher.model.get_dtype()),
            "options": options}


def build_comfy_rank_model(spec: dict, device: torch.device):
    """The ComfyDenoiser `comfy_rank_model` described, in this worker, for `device`."""
    _import_comfyui(spec, device)
    import comfy.clip_vision
    import comfy.sd

    from .comfy_model import ComfyDenoiser

    vae = clip_vision = None
    if spec["vae"] is not None:
        vae = comfy.sd.VAE(sd=spec["vae"]["weights"], dtype=_dtype(spec["vae"]["dtype"]))
    if spec["clip_vision"] is not None:
        clip_vision = comfy.clip_vision.load_clipvision_from_sd(spec["clip_vision"]["weights"])
    model = _rebuild(spec["model"])
    low = None if spec["low_noise"] is None else _rebuild(spec["low_noise"])
    if device.type == "cuda":  # onto the GPU now (patches applied), so the CPU copy goes before the next rank builds
        import comfy.model_management

        comfy.model_management.load_models_gpu([model])
    return ComfyDenoiser(model, spec["sigma_schedule"], spec["sampler"], vae=vae, clip_vision=clip_vision,
                         low_noise=low, boundary=spec["boundary"], switch_step=spec["switch_step"])


def _rebuild(part: dict):
    import comfy.sd

    patcher = comfy.sd.load_diffusion_model_state_dict(dict(part["weights"]), model_options={"dtype": _dtype(part["dtype"])})
    applied = portable_loads(part["options"])
    patcher.patches = applied["patches"]
    patcher.object_patches = applied["object_patches"]
    patcher.weight_wrapper_patches = applied["weight_wrapper_patches"]
    patcher.model_options = applied["model_options"]
    patcher.wrappers = applied["wrappers"]
    patcher.callbacks = applied["callbacks"]
    return patcher


def _import_comfyui(spec: dict, device: torch.device) -> None:
    """ComfyUI importable in this worker, with the launching process's command-line settings (the CPU for CPU ranks)."""
    if spec["comfyui"] not in sys.path:
        sys.path.insert(0, spec["comfyui"])
    if "comfy.model_management" in sys.modules:
        return
    setup = os.environ.get(RANK_SETUP_ENV)
    if setup:
        runpy.run_path(setup)
    import comfy.cli_args

    for key, value in portable_loads(spec["args"]).items():
        setattr(comfy.cli_args.args, key, value)
    comfy.cli_args.args.cpu = device.type == "cpu"
    importlib.import_module("comfy.model_management")


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name.removeprefix("torch."))


def portable_conditioning(conditioning) -> dict:
    """A ComfyConditioning (a prompt's own ComfyUI conditioning) as plain data for the ranks."""
    return {"entries": portable_dumps(conditioning.entries), "name": conditioning.name}


def conditioning_from_portable(data: dict):
    from .comfy_model import ComfyConditioning

    return ComfyConditioning(portable_loads(data["entries"]), data["name"])


class _PortablePickler(pickle.Pickler):
    """Pickles an instance of a class made inside a function (ComfyUI's model sampling classes) as that class's
    bases, name and state, rebuilt on loading; everything else as pickle does."""

    def reducer_override(self, obj):
        kind = type(obj)
        if "<locals>" in getattr(kind, "__qualname__", "") and not isinstance(obj, type):
            state = obj.__getstate__() if hasattr(obj, "__getstate__") else obj.__dict__
            return _rebuild_local, (kind.__bases__, kind.__name__), state
        return NotImplemented


def _rebuild_local(bases: tuple, name: str):
    kind = type(name, bases, {})
    return kind.__new__(kind)


def portable_dumps(value) -> bytes:
    buffer = io.BytesIO()
    _PortablePickler(buffer).dump(value)
    return buffer.getvalue()


def portable_loads(data: bytes):
    return pickle.loads(data)
