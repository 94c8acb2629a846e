"""Text conditions for video-diffusion-pytorch models trained with `use_bert_text_cond` (cond_dim 768).

The original embeds prompts with bert-base-cased (fetched over torch.hub): the last hidden state averaged over
every token after [CLS] ([SEP] included, padding excluded), as `GaussianDiffusion.sample` does. Here the BERT
model and tokenizer are read from a local folder (a copy of bert-base-cased); nothing is downloaded.
"""

import os

import torch

from .loader import ModelLoadError


@torch.no_grad()
def bert_condition(folder: str, texts: list[str], eps: float = 1e-8) -> torch.Tensor:
    """Mean-pooled BERT embeddings [len(texts), hidden] (float32, CPU) of `texts`, read from `folder`."""
    if not os.path.isdir(folder):
        raise ModelLoadError(f"BERT folder '{folder}' does not exist: give the full path of a local copy of bert-base-cased")
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    except Exception as error:
        raise ModelLoadError(f"could not load a BERT model and tokenizer from {folder}: {error}") from error
    encoding = tokenizer(texts, padding=True, return_tensors="pt")
    mask = encoding["attention_mask"]
    hidden = model(input_ids=encoding["input_ids"], attention_mask=mask).last_hidden_state.float()
    mask = mask[:, 1:, None].to(hidden.dtype)
    return (hidden[:, 1:] * mask).sum(dim=1) / (mask.sum(dim=1) + eps)
