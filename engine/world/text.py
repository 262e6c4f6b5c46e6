"""A small text encoder for the embedded teacher: word tokens -> a transformer -> (B, L, width).

Trained jointly with the denoiser. Token 0 is padding, token 1 a start token that every prompt
(the empty one too) begins with, so the unconditional branch of CFG is the start token alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from .captions import tokenize

PAD, BOS, UNK = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<unk>")


@dataclass
class TextEncoderConfig:
    vocab: list[str]  # words after the special tokens
    width: int = 128  # token width = the denoiser's cross-attention width
    layers: int = 2  # transformer layers
    heads: int = 4  # attention heads
    max_len: int = 32  # tokens per prompt, start token included; longer prompts are cut


class Tokenizer:
    def __init__(self, vocab: list[str], max_len: int):
        self.index = {w: i + len(SPECIALS) for i, w in enumerate(vocab)}
        self.max_len = max_len

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, L) and a mask (B, L), True where a token is real."""
        rows = [[BOS] + [self.index.get(w, UNK) for w in tokenize(p)] for p in prompts]
        rows = [r[: self.max_len] for r in rows]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return ids, ids != PAD


class TextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.tokenizer = Tokenizer(config.vocab, config.max_len)
        self.embed = nn.Embedding(len(config.vocab) + len(SPECIALS), config.width)
        self.pos = nn.Parameter(torch.zeros(config.max_len, config.width))
        layer = nn.TransformerEncoderLayer(config.width, config.heads, 4 * config.width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.width)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids) + self.pos[: ids.shape[1]]  # (B, L, C)
        h = self.blocks(h, src_key_padding_mask=~mask)
        return self.norm(h)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden states (B, L, C), mask (B, L)) on this module's device."""
        ids, mask = self.tokenizer(prompts)
        device = self.embed.weight.device
        ids, mask = ids.to(device), mask.to(device)
        return self(ids, mask), mask

    def save(self, directory: Path, dtype: torch.dtype = torch.float32) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        save_file({k: v.detach().to(dtype).contiguous() for k, v in self.state_dict().items()},
                  directory / "model.safetensors")

    @classmethod
    def load(cls, directory: Path) -> TextEncoder:
        config = json.loads((directory / "config.json").read_text())  # diffusers' keys too, in an export
        fields = TextEncoderConfig.__dataclass_fields__
        model = cls(TextEncoderConfig(**{k: v for k, v in config.items() if k in fields}))
        weights = directory / "model.safetensors"
        state = load_file(weights if weights.exists() else directory / "diffusion_pytorch_model.safetensors")
        model.load_state_dict({k: v.float() for k, v in state.items()})
        return model
