"""ComfyUI-LongVideo: long video generation nodes (continuation, hierarchical, interpolation, multi-GPU)."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .utils.comfy import register_model_folder

register_model_folder()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
