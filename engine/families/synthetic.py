"""Random-weight diffusers pipelines of every supported family, tiny or at real shapes.

Tiny ones (a few hundred thousand parameters, 64 x 64 images, seconds on a CPU) are what the tests
and `python -m engine random-model` save and load back through `--model PATH`; real-shaped ones
(`real=True`: FLUX.1-dev, FLUX.2-klein-4B and SDXL denoisers and VAEs at their published sizes,
small text encoders of the right width) are what scripts/gpu_smoke.py times. Nothing is
downloaded: tokenizers are built from a byte-level vocabulary written here.
"""

from __future__ import annotations

import json
import string
from contextlib import contextmanager
from pathlib import Path

import torch

KINDS = ("sd", "sd-v", "sdxl", "flux", "flux-dev", "flux2-klein", "sd3")
REAL_KINDS = ("sdxl", "flux-dev", "flux2-klein")
TINY_SIZE = 64  # default image side of the tiny pipelines
FAMILY = {"sd": "sd", "sd-v": "sd", "sdxl": "sdxl", "flux": "flux", "flux-dev": "flux", "flux2-klein": "flux2",
          "sd3": "sd3"}


# -- tokenizers (byte-level vocabularies: every text tokenizes, nothing to download) --

def _bytes() -> list[str]:
    from tokenizers import pre_tokenizers
    return sorted(pre_tokenizers.ByteLevel.alphabet())


def clip_tokenizer():
    from transformers import CLIPTokenizer
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _bytes():
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer():
    from transformers import T5TokenizerFast
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    pieces += [("\u2581" + c, -2.5) for c in string.ascii_lowercase]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def qwen_tokenizer():
    from transformers import Qwen2TokenizerFast
    vocab = {c: i for i, c in enumerate(_bytes())}
    for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[s] = len(vocab)
    tok = Qwen2TokenizerFast(vocab=vocab, merges=[], model_max_length=512)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


# -- text encoders --

def _clip(width: int, layers: int, projection: bool, heads: int = 2):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    cfg = CLIPTextConfig(vocab_size=520, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                         num_attention_heads=heads, max_position_embeddings=77, projection_dim=width,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def _t5(width: int, layers: int = 2):
    from transformers import T5Config, T5EncoderModel
    return T5EncoderModel(T5Config(vocab_size=128, d_model=width, d_ff=2 * width, num_layers=layers,
                                   num_heads=2, d_kv=width // 2)).eval()


def _qwen3(width: int, layers: int = 28, mlp: int | None = None):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=272, hidden_size=width, intermediate_size=mlp or 2 * width,
                                        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                                        head_dim=8, max_position_embeddings=1024, tie_word_embeddings=True)).eval()


# -- VAEs --

def _vae(latent: int, real: bool, **extra):
    from diffusers import AutoencoderKL
    shape = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32) if real else \
        dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4)
    blocks = len(shape["block_out_channels"])
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent, sample_size=TINY_SIZE,
                         down_block_types=("DownEncoderBlock2D",) * blocks,
                         up_block_types=("UpDecoderBlock2D",) * blocks,
                         **shape, **extra).eval()


# -- pipelines --

SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
DYNAMIC_SHIFT = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                     base_image_seq_len=256, max_image_seq_len=4096)


def _scheduler(kind: str):
    """The scheduler each kind ships with (built outside the device/dtype context: it stays on the CPU)."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, PNDMScheduler
    if kind == "sdxl":
        return EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="leading")
    if kind == "sd-v":  # SD 2.x ships DDIM with v_prediction, SD 1.5 PNDM; both "leading" with steps_offset 1
        return DDIMScheduler(**SD_BETAS, prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False)
    if kind == "sd":
        return PNDMScheduler(**SD_BETAS, skip_prk_steps=True, set_alpha_to_one=False)
    if kind == "sd3":
        return FlowMatchEulerDiscreteScheduler(shift=3.0)
    return FlowMatchEulerDiscreteScheduler(**DYNAMIC_SHIFT)


def _sd(kind: str, real: bool, sched):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    if kind == "sdxl":
        if real:
            te1, te2 = _clip(768, 2, False, 12), _clip(1280, 2, True, 20)
        else:
            te1, te2 = _clip(16, 2, False), _clip(16, 2, True)
        width = te1.config.hidden_size + te2.config.hidden_size
        if real:  # SDXL base's UNet (stabilityai/stable-diffusion-xl-base-1.0, unet/config.json)
            shape = dict(sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
                         transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                         addition_time_embed_dim=256,
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
        else:
            shape = dict(sample_size=TINY_SIZE // 8, block_out_channels=(16, 32), layers_per_block=1,
                         transformer_layers_per_block=(1, 2), attention_head_dim=(2, 4), addition_time_embed_dim=4,
                         norm_num_groups=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
        pooled = te2.config.projection_dim + 6 * shape["addition_time_embed_dim"]  # pooled text + six size ids
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, cross_attention_dim=width,
                                    use_linear_projection=True, addition_embed_type="text_time",
                                    projection_class_embeddings_input_dim=pooled, **shape)
        return StableDiffusionXLPipeline(vae=_vae(4, real, scaling_factor=0.13025), text_encoder=te1,
                                         text_encoder_2=te2, tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(),
                                         unet=unet.eval(), scheduler=sched, add_watermarker=False)
    te = _clip(16, 2, False)
    v = kind == "sd-v"
    unet = UNet2DConditionModel(sample_size=TINY_SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=16,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                attention_head_dim=(2, 4) if v else 4, use_linear_projection=v)
    return StableDiffusionPipeline(vae=_vae(4, real, scaling_factor=0.18215), text_encoder=te,
                                   tokenizer=clip_tokenizer(), unet=unet.eval(), scheduler=sched, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def _flux(kind: str, real: bool, sched):
    from diffusers import FluxPipeline, FluxTransformer2DModel
    if real:  # black-forest-labs/FLUX.1-dev transformer/config.json
        shape = dict(in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                     num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                     axes_dims_rope=(16, 56, 56))
        te, t5 = _clip(768, 2, False, 12), _t5(4096, 1)
    else:
        shape = dict(in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                     joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=(4, 6, 6))
        te, t5 = _clip(16, 2, False), _t5(16)
    net = FluxTransformer2DModel(guidance_embeds=kind == "flux-dev", **shape).eval()
    vae = _vae(shape["in_channels"] // 4, real, scaling_factor=0.3611, shift_factor=0.1159,
               use_quant_conv=False, use_post_quant_conv=False)
    return FluxPipeline(scheduler=sched, vae=vae, text_encoder=te, tokenizer=clip_tokenizer(),
                        text_encoder_2=t5, tokenizer_2=t5_tokenizer(), transformer=net)


def _flux2(real: bool, sched):
    from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel
    if real:  # FLUX.2-klein-4B: 5 double + 20 single blocks, 24 heads x 128, Qwen3-4B width (3 x 2560)
        shape = dict(in_channels=128, num_layers=5, num_single_layers=20, attention_head_dim=128,
                     num_attention_heads=24, joint_attention_dim=3 * 2560, axes_dims_rope=(32, 32, 32, 32))
        vae = AutoencoderKLFlux2()
        text = _qwen3(2560, mlp=256)  # the right width and depth for the prompt stack; a small MLP
    else:
        shape = dict(in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                     joint_attention_dim=3 * 16, timestep_guidance_channels=32, mlp_ratio=2.0,
                     axes_dims_rope=(4, 4, 4, 4))
        vae = AutoencoderKLFlux2(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4,
                                 norm_num_groups=4, sample_size=TINY_SIZE)
        text = _qwen3(16)
    with torch.no_grad():  # batch-norm statistics as a trained VAE has them, so decoding must undo them
        vae.bn.running_mean.normal_(0, 0.5)
        vae.bn.running_var.uniform_(0.5, 2.0)
    net = Flux2Transformer2DModel(guidance_embeds=False, **shape).eval()
    return Flux2KleinPipeline(scheduler=sched, vae=vae.eval(), text_encoder=text,
                              tokenizer=qwen_tokenizer(), transformer=net, is_distilled=False)


def _sd3(sched):
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    net = SD3Transformer2DModel(sample_size=TINY_SIZE // 8, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=16).eval()
    vae = _vae(4, False, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
    return StableDiffusion3Pipeline(transformer=net, scheduler=sched, vae=vae,
                                    text_encoder=_clip(16, 2, True), tokenizer=clip_tokenizer(),
                                    text_encoder_2=_clip(16, 2, True), tokenizer_2=clip_tokenizer(),
                                    text_encoder_3=_t5(32), tokenizer_3=t5_tokenizer())


@contextmanager
def _building(device: str | torch.device, dtype: torch.dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(before)


def build(kind: str, *, real: bool = False, seed: int = 0, device: str | torch.device = "cpu",
          dtype: torch.dtype = torch.float32):
    """A random-weight diffusers pipeline of `kind` (one of KINDS), built directly on `device` in `dtype`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if real and kind not in REAL_KINDS:
        raise ValueError(f"real shapes exist for {', '.join(REAL_KINDS)}, not {kind!r}")
    torch.manual_seed(seed)
    sched = _scheduler(kind)
    with _building(device, dtype):
        if kind.startswith("sd") and kind != "sd3":
            pipe = _sd(kind, real, sched)
        elif kind.startswith("flux2"):
            pipe = _flux2(real, sched)
        elif kind.startswith("flux"):
            pipe = _flux(kind, real, sched)
        else:
            pipe = _sd3(sched)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save(kind: str, path: Path, seed: int = 0) -> Path:
    """Save a tiny random pipeline of `kind` as a diffusers directory (model_index.json) that
    `--model PATH` loads; lab.json records its family and its 64-pixel default size."""
    pipe = build(kind, seed=seed)
    path = Path(path)
    pipe.save_pretrained(path)
    (path / "lab.json").write_text(json.dumps({"family": FAMILY[kind], "default_size": TINY_SIZE,
                                               "random": kind}, indent=1))
    return path
