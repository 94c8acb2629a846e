"""CLIP text encoding as the text-to-video pipelines of diffusers do it."""

import torch

from ..utils.comfy import ManagedModule


class TextEncoder:
    """A CLIP tokenizer + text model pair. `encode` returns the last hidden state, [N, tokens, width]."""

    def __init__(self, tokenizer, text_model):
        self.tokenizer = tokenizer
        self.text_model = text_model
        self.managed = ManagedModule(text_model)
        self.width = text_model.config.hidden_size

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings [N, max_length, width] and pooled embeddings [N, width], in float32 on the CPU."""
        device = self.managed.load()
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        attention_mask = None
        if getattr(self.text_model.config, "use_attention_mask", False):
            attention_mask = tokens.attention_mask.to(device)
        output = self.text_model(tokens.input_ids.to(device), attention_mask=attention_mask)
        return output[0].float().cpu(), output[1].float().cpu()
