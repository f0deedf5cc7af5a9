"""benchmarks/generation.py part 2 runs its own code on the CPU with tiny configs (the GPU run is the same code)."""

from __future__ import annotations

from functools import partial

import torch

from benchmarks import generation as bench
from benchmarks.generation_models import SD_VAE, build_flux, build_sd15, build_sdxl

TINY_VAE = {**SD_VAE, "block_out_channels": (8, 8), "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2, "norm_num_groups": 4, "layers_per_block": 1}
TINY_UNET = {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1, "block_out_channels": (8, 16),
             "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"), "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
             "cross_attention_dim": 768, "attention_head_dim": 2, "norm_num_groups": 4}
TINY_SDXL = {**TINY_UNET, "cross_attention_dim": 800, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
             "projection_class_embeddings_input_dim": 6 * 8 + 32, "use_linear_projection": True}
TINY_FLUX = {"patch_size": 1, "in_channels": 16, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
             "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32, "guidance_embeds": True,
             "axes_dims_rope": (4, 4, 8)}
TINY_FLUX_VAE = {**TINY_VAE, "block_out_channels": (8,), "down_block_types": ("DownEncoderBlock2D",),
                 "up_block_types": ("UpDecoderBlock2D",), "latent_channels": 4, "use_quant_conv": False, "use_post_quant_conv": False,
                 "shift_factor": 0.1159, "scaling_factor": 0.3611}


def test_part_two_times_each_family_against_its_plain_call():
    families = {"sd": partial(build_sd15, unet=TINY_UNET, vae=TINY_VAE), "sdxl": partial(build_sdxl, unet=TINY_SDXL, vae=TINY_VAE),
                "flux": partial(build_flux, transformer=TINY_FLUX, vae=TINY_FLUX_VAE)}
    lines = bench._gpu_section(torch.device("cpu"), repeats=1, families=families, steps=2, batch=1)
    table = "\n".join(lines)
    for title in ("Stable Diffusion 1.x/2.x", "Stable Diffusion XL", "FLUX.1"):
        assert f"{title}: plain pipeline call" in table and f"{title}: ours (`generate`)" in table
    assert table.count("% of bf16 peak") == 9
