"""Tiny random pipelines of every text-to-image family, built offline (no hub): real diffusers and
transformers classes at tiny configs, tokenizers written in the test.

Each ``make_tiny_<family>(out)`` saves a pipeline folder with ``save_pretrained`` and returns it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789-,.")
HIDDEN = 32


def clip_tokenizer(folder: Path, max_length: int = 16):
    """A character-level CLIP BPE tokenizer from a vocab.json and an empty merges.txt."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"] + LETTERS + [f"{c}</w>" for c in LETTERS]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def t5_tokenizer(max_length: int = 24):
    """A T5 (Unigram) tokenizer over a small word list, with T5's special tokens; nothing downloaded."""
    from transformers import T5TokenizerFast

    words = LETTERS + "colonoscopy image of an a adenomatous non polyp colorectal".split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{w}", -3.0 - i * 0.01) for i, w in enumerate(dict.fromkeys(words))]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=max_length)


def _vocab_size() -> int:
    return 2 + 2 * len(LETTERS)


def _clip_config(**extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=_vocab_size(), hidden_size=HIDDEN, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                          pad_token_id=1, projection_dim=HIDDEN, **extra)


def _t5_encoder():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=80, d_model=HIDDEN, d_kv=8, d_ff=37, num_layers=1, num_heads=2,
                                   relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0))


def _flow_vae(latent_channels: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                         latent_channels=latent_channels, norm_num_groups=1, use_quant_conv=False,
                         use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)


def _sd_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(4, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, sample_size=16)


def _save(pipe, out: Path, name: str) -> Path:
    folder = out / name
    pipe.save_pretrained(folder)
    return folder


def make_tiny_sdxl(out: Path) -> Path:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + HIDDEN,
        cross_attention_dim=2 * HIDDEN, norm_num_groups=4,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_sd_vae(), text_encoder=CLIPTextModel(_clip_config()), text_encoder_2=CLIPTextModelWithProjection(_clip_config()),
        tokenizer=clip_tokenizer(out / "_vocab"), tokenizer_2=clip_tokenizer(out / "_vocab2"), unet=unet,
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    )
    return _save(pipe, out, "tiny-sdxl")


def make_tiny_sd3(out: Path) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=HIDDEN, joint_attention_dim=HIDDEN, pooled_projection_dim=2 * HIDDEN, out_channels=4,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=_flow_vae(4),
        text_encoder=CLIPTextModelWithProjection(_clip_config()), tokenizer=clip_tokenizer(out / "_vocab"),
        text_encoder_2=CLIPTextModelWithProjection(_clip_config()), tokenizer_2=clip_tokenizer(out / "_vocab2"),
        text_encoder_3=_t5_encoder(), tokenizer_3=t5_tokenizer(),
    )
    return _save(pipe, out, "tiny-sd3")


def make_tiny_flux(out: Path) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=HIDDEN, pooled_projection_dim=HIDDEN, axes_dims_rope=[4, 4, 8], guidance_embeds=True,
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_flow_vae(1), text_encoder=CLIPTextModel(_clip_config()),
        tokenizer=clip_tokenizer(out / "_vocab"), text_encoder_2=_t5_encoder(), tokenizer_2=t5_tokenizer(),
        transformer=transformer,
    )
    return _save(pipe, out, "tiny-flux")


def make_tiny_pixart(out: Path) -> Path:
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=8, num_layers=1, patch_size=2, attention_head_dim=8, num_attention_heads=2, caption_channels=HIDDEN,
        in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    )
    pipe = PixArtAlphaPipeline(tokenizer=t5_tokenizer(), text_encoder=_t5_encoder(), vae=_sd_vae(),
                               transformer=transformer, scheduler=DPMSolverMultistepScheduler())
    return _save(pipe, out, "tiny-pixart")


def _kandinsky_prior(out: Path) -> dict:
    from diffusers import PriorTransformer, UnCLIPScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=HIDDEN, image_size=32, projection_dim=HIDDEN, intermediate_size=37, num_attention_heads=2,
        num_channels=3, num_hidden_layers=1, patch_size=16,
    ))
    return {
        "prior": PriorTransformer(num_attention_heads=2, attention_head_dim=16, embedding_dim=HIDDEN, num_layers=1, num_embeddings=16),
        "image_encoder": vision, "text_encoder": CLIPTextModelWithProjection(_clip_config()),
        "tokenizer": clip_tokenizer(out / "_vocab"),
        "scheduler": UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                     num_train_timesteps=1000, clip_sample=True, clip_sample_range=10.0),
        "image_processor": CLIPImageProcessor(crop_size=32, size=32),
    }


def _kandinsky_decoder() -> dict:
    from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel

    unet = UNet2DConditionModel(
        in_channels=4, out_channels=8, addition_embed_type="image", down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"), mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(8, 16), layers_per_block=1, encoder_hid_dim=HIDDEN, encoder_hid_dim_type="image_proj",
        cross_attention_dim=HIDDEN, attention_head_dim=4, resnet_time_scale_shift="scale_shift", class_embed_type=None,
        norm_num_groups=4, sample_size=8,
    )
    movq = VQModel(
        block_out_channels=[32, 32], down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"], in_channels=3,
        latent_channels=4, layers_per_block=1, norm_num_groups=8, norm_type="spatial", num_vq_embeddings=12,
        out_channels=3, up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"], vq_embed_dim=4,
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, steps_offset=1, prediction_type="epsilon", thresholding=False)
    return {"unet": unet, "movq": movq, "scheduler": scheduler}


def make_tiny_kandinsky(out: Path) -> Path:
    """A KandinskyV22CombinedPipeline folder (prior and decoder in one model_index.json)."""
    from diffusers import KandinskyV22CombinedPipeline

    torch.manual_seed(0)
    prior = {f"prior_{k}": v for k, v in _kandinsky_prior(out).items()}
    return _save(KandinskyV22CombinedPipeline(**_kandinsky_decoder(), **prior), out, "tiny-kandinsky")


def make_tiny_kandinsky_pair(out: Path) -> Path:
    """A folder holding ``prior/`` (KandinskyV22PriorPipeline) and ``decoder/`` (KandinskyV22Pipeline)."""
    from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline

    torch.manual_seed(0)
    folder = out / "tiny-kandinsky-pair"
    KandinskyV22PriorPipeline(**_kandinsky_prior(out)).save_pretrained(folder / "prior")
    KandinskyV22Pipeline(**_kandinsky_decoder()).save_pretrained(folder / "decoder")
    return folder


BUILDERS = {
    "sdxl": make_tiny_sdxl, "sd3": make_tiny_sd3, "flux": make_tiny_flux, "pixart": make_tiny_pixart,
    "kandinsky22": make_tiny_kandinsky, "kandinsky22-pair": make_tiny_kandinsky_pair,
}


def make_lora(base: Path, out: Path, seed: int = 1, metadata_base: str | None = None) -> Path:
    """A LoRA adapter made with peft on ``base``'s denoiser (random, non-zero), saved as diffusers writes it.

    Args:
        metadata_base: Written into the safetensors header as ``base_model`` (as trainers record it).
    """
    from diffusers import DiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = DiffusionPipeline.from_pretrained(base, local_files_only=True)
    name = "unet" if hasattr(pipe, "unet") else "transformer"
    denoiser = getattr(pipe, name)
    denoiser.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    torch.manual_seed(seed)
    with torch.no_grad():
        for param_name, param in denoiser.named_parameters():
            if "lora_" in param_name:
                param.normal_(0, 0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(denoiser))
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(type(pipe), "save_lora_weights"):
        type(pipe).save_lora_weights(out, **{f"{name}_lora_layers": layers}, safe_serialization=True)
    else:  # Kandinsky 2.2: the decoder UNet saves its own adapter
        denoiser.save_lora_adapter(out, weight_name="pytorch_lora_weights.safetensors")
    if metadata_base is not None:
        from safetensors.torch import load_file, save_file

        weights = out / "pytorch_lora_weights.safetensors"
        save_file(load_file(weights), weights, metadata={"base_model": metadata_base, "format": "pt"})
    return out


_UNET_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
                ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _rename(rest: str, pairs) -> str:
    head, _, tail = rest.partition(".") if not rest.startswith("to_out.0") else ("to_out.0", ".", rest[len("to_out.0."):])
    for new, old in pairs:
        if head == new:
            return f"{old}.{tail}"
    return rest


def _ldm_unet_key(key: str, config: dict) -> str:
    import re

    per = config["layers_per_block"] + 1
    with_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    rules = (
        (r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", lambda b, j, r: f"input_blocks.{1 + b * per + j}.0.{_rename(r, _UNET_RESNET)}"),
        (r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", lambda b, j, r: f"input_blocks.{1 + b * per + j}.1.{r}"),
        (r"down_blocks\.(\d+)\.downsamplers\.(0)\.conv\.(.*)", lambda b, _j, r: f"input_blocks.{1 + b * per + per - 1}.0.op.{r}"),
        (r"mid_block\.resnets\.(\d+)\.()(.*)", lambda k, _j, r: f"middle_block.{2 * k}.{_rename(r, _UNET_RESNET)}"),
        (r"mid_block\.attentions\.(0)\.()(.*)", lambda _k, _j, r: f"middle_block.1.{r}"),
        (r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", lambda b, j, r: f"output_blocks.{b * per + j}.0.{_rename(r, _UNET_RESNET)}"),
        (r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", lambda b, j, r: f"output_blocks.{b * per + j}.1.{r}"),
        (r"up_blocks\.(\d+)\.upsamplers\.(0)\.conv\.(.*)",
         lambda b, _j, r: f"output_blocks.{b * per + per - 1}.{2 if with_attention[b] else 1}.conv.{r}"),
    )
    for pattern, build in rules:
        found = re.fullmatch(pattern, key)
        if found:
            a, b, rest = found.groups()
            return build(int(a), int(b) if b else 0, rest)
    raise KeyError(key)


def _ldm_vae_key(key: str, config: dict) -> str:
    import re

    blocks = len(config["up_block_types"])
    rules = (
        (r"encoder\.down_blocks\.(\d+)\.resnets\.(.*)", lambda i, r: f"encoder.down.{i}.block.{r.replace('conv_shortcut', 'nin_shortcut')}"),
        (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", lambda i, r: f"encoder.down.{i}.downsample.{r}"),
        (r"decoder\.up_blocks\.(\d+)\.resnets\.(.*)",
         lambda i, r: f"decoder.up.{blocks - 1 - i}.block.{r.replace('conv_shortcut', 'nin_shortcut')}"),
        (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", lambda i, r: f"decoder.up.{blocks - 1 - i}.upsample.{r}"),
        (r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", None),
        (r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", None),
    )
    for pattern, build in rules:
        found = re.fullmatch(pattern, key)
        if not found:
            continue
        if "resnets" in pattern and "mid" in pattern:
            part, k, rest = found.groups()
            return f"{part}.mid.block_{int(k) + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        if "attentions" in pattern:
            part, rest = found.groups()
            return f"{part}.mid.attn_1.{_rename(rest, _VAE_ATTENTION)}"
        index, rest = found.groups()
        return build(int(index), rest)
    raise KeyError(key)


def write_sd_single_file(folder: Path, out: Path) -> Path:
    """Write a Stable Diffusion pipeline folder as one original-layout (A1111/LDM) ``.safetensors`` file.

    The inverse of diffusers' ``convert_ldm_*_checkpoint``: ``model.diffusion_model.*`` (UNet),
    ``first_stage_model.*`` (VAE), ``cond_stage_model.transformer.*`` (CLIP text encoder).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder")
    top_unet = {d: ldm for d, ldm in DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"].items()}
    top_vae = {d: ldm for d, ldm in DIFFUSERS_TO_LDM_MAPPING["vae"].items()}
    state = {}
    for key, value in unet.state_dict().items():
        state["model.diffusion_model." + (top_unet.get(key) or _ldm_unet_key(key, unet.config))] = value
    for key, value in vae.state_dict().items():
        state["first_stage_model." + (top_vae.get(key) or _ldm_vae_key(key, vae.config))] = value
    for key, value in text_encoder.state_dict().items():
        # Original checkpoints hold CLIP's parameters under text_model. (transformers 5 drops that level)
        state["cond_stage_model.transformer." + (key if key.startswith("text_model.") else f"text_model.{key}")] = value
    save_file({k: v.contiguous() for k, v in state.items()}, out)
    return out
