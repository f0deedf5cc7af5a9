"""Random pipelines at the real SD-1.5, SDXL and FLUX.1 configs for ``benchmarks/generation.py`` part 2.

Built in memory from configs (no downloads): full-size denoisers and autoencoders, text encoders of
the real widths with one layer (their cost is small next to the denoiser's), tokenizers written here.
Each builder takes (device, dtype) and returns the pipeline on that device.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 768, "attention_head_dim": 8,
}
"""Stable Diffusion 1.5's UNet config (860 M parameters; 64x64x4 latents for 512 px images)."""
SD_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
}
"""The SD-1.5 / SDXL autoencoder config (8x downsampling, 4 latent channels)."""
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20), "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816,
    "cross_attention_dim": 2048,
}
"""SDXL base 1.0's UNet config (2.6 B parameters; 128x128x4 latents for 1024 px images)."""
FLUX_TRANSFORMER = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
"""FLUX.1-dev's transformer config (12 B parameters)."""
FLUX_VAE = {**SD_VAE, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False,
            "shift_factor": 0.1159, "scaling_factor": 0.3611}
FLUX_SCHEDULER = {"shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
                  "base_image_seq_len": 256, "max_image_seq_len": 4096}
"""FLUX.1-dev's saved scheduler config."""


def clip_tokenizer(max_length: int = 77):
    """A character-level CLIP tokenizer (the prompt's text hardly matters for speed)."""
    from transformers import CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789-,.")
    tokens = ["<|startoftext|>", "<|endoftext|>"] + letters + [f"{c}</w>" for c in letters]
    with tempfile.TemporaryDirectory() as folder:
        vocab, merges = Path(folder) / "vocab.json", Path(folder) / "merges.txt"
        vocab.write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
        merges.write_text("#version: 0.2\n")
        return CLIPTokenizer(str(vocab), str(merges), model_max_length=max_length)


def t5_tokenizer():
    from transformers import T5TokenizerFast

    words = "colonoscopy image of an adenomatous polyp".split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [(f"\u2581{w}", -3.0) for w in words]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


def _clip(hidden: int, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=80, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=2,
                            num_attention_heads=max(1, hidden // 64), max_position_embeddings=77, projection_dim=hidden,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def build_sd15(device: torch.device, dtype: torch.dtype, unet: dict = SD15_UNET, vae: dict = SD_VAE):
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        parts = {"unet": UNet2DConditionModel(**unet), "vae": AutoencoderKL(**vae),
                 "text_encoder": _clip(unet["cross_attention_dim"])}
    pipe = StableDiffusionPipeline(**parts, tokenizer=clip_tokenizer(), scheduler=DPMSolverMultistepScheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return pipe.to(device, dtype)


def build_sdxl(device: torch.device, dtype: torch.dtype, unet: dict = SDXL_UNET, vae: dict = SD_VAE):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    width_2 = unet["cross_attention_dim"] - 768
    with torch.device(device):
        parts = {"unet": UNet2DConditionModel(**unet), "vae": AutoencoderKL(**vae),
                 "text_encoder": _clip(768), "text_encoder_2": _clip(width_2, projection=True)}
    pipe = StableDiffusionXLPipeline(**parts, tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(),
                                     scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear"))
    return pipe.to(device, dtype)


def build_flux(device: torch.device, dtype: torch.dtype, transformer: dict = FLUX_TRANSFORMER, vae: dict = FLUX_VAE):
    # The vae dict must name shift_factor and scaling_factor: FLUX's decode uses both.
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    t5 = T5Config(vocab_size=80, d_model=transformer["joint_attention_dim"], d_kv=64, d_ff=10240, num_layers=1,
                  num_heads=64, decoder_start_token_id=0, pad_token_id=0)
    with torch.device(device):
        # Made directly in the target dtype: the 12 B-parameter transformer in fp32 would need 48 GB.
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype if dtype.is_floating_point else torch.float32)
        try:
            parts = {"transformer": FluxTransformer2DModel(**transformer), "vae": AutoencoderKL(**vae),
                     "text_encoder": _clip(transformer["pooled_projection_dim"]), "text_encoder_2": T5EncoderModel(t5)}
        finally:
            torch.set_default_dtype(default)
    pipe = FluxPipeline(**parts, tokenizer=clip_tokenizer(), tokenizer_2=t5_tokenizer(),
                        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER))
    return pipe.to(device, dtype)


FULL_SIZE = {"sd": build_sd15, "sdxl": build_sdxl, "flux": build_flux}
"""Part 2's families, by family name."""
