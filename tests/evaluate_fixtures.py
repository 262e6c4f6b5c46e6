"""Tiny random networks standing in for the real ones a user brings: a CLIP model saved as a
transformers directory, and a feature extractor for Fréchet distances."""

from pathlib import Path

import torch
from torch import nn


def save_tiny_clip(path: Path) -> Path:
    """A random-weight CLIPModel and its processor, saved the way a downloaded CLIP directory is."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig, CLIPVisionConfig

    from engine.families.synthetic import clip_tokenizer

    torch.manual_seed(0)
    text = CLIPTextConfig(vocab_size=520, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=clip_tokenizer()).save_pretrained(path)
    return path


class TinyFeatures(nn.Module):
    """uint8 (B, 3, H, W) -> (B, 8): colour statistics through a random linear layer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(6, 8)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        return self.proj(torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)).double()
