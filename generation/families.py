"""The diffusers text-to-image families a checkpoint can belong to, and what sampling each allows.

A family is read from the pipeline class in ``model_index.json``. It decides which prompt inputs
exist (a negative prompt or not), what the guidance number means (classifier-free guidance, or
FLUX's distilled guidance embedded in the transformer), which schedulers fit its noise schedule
(epsilon/v-prediction samplers for SD, SDXL, PixArt, Kandinsky; flow matching for SD3 and FLUX),
its token limit per text encoder, its native resolution, its dtype on a GPU, and whether LoRA
adapters and a mask-conditioned ControlNet exist for it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

EPSILON_SCHEDULERS = ("dpm++", "unipc", "euler", "euler-a", "ddim")
FLOW_SCHEDULERS = ("flow-euler",)


class UnknownFamily(ValueError):
    """A pipeline folder whose pipeline class is not one of the supported text-to-image families."""


@dataclass(frozen=True)
class Family:
    """What one family of pipelines offers.

    Attributes:
        name: Short name recorded in provenance (``sd``, ``sdxl``, ``sd3``, ``flux``, ``pixart``, ``kandinsky22``).
        title: For people.
        pipelines: diffusers pipeline class names of the family.
        denoiser: The component that denoises (``unet`` or ``transformer``).
        negative_prompt: Whether the pipeline takes a negative prompt.
        guidance: ``cfg`` (classifier-free guidance) or ``distilled`` (FLUX: a number fed to the model).
        schedulers: Sampler names it accepts (keys of ``generation.sampling.SCHEDULERS``); the first is the default.
        tokenizers: The tokenizer components the prompt goes through; the last is the T5 tokenizer
            when ``max_sequence_length`` is set.
        max_sequence_length: Passed to the pipeline for its T5 encoder (None: the family has no T5).
        cuda_dtype: ``float16`` or ``bfloat16`` on a GPU.
        lora: Whether diffusers can load a LoRA adapter into it (``load_lora_weights``; for
            Kandinsky 2.2 into its decoder UNet).
        controlnet: Whether a mask-conditioned ControlNet exists for it in this project.
        legacy_callback: The pipeline reports progress through ``callback`` rather than ``callback_on_step_end``.
        min_steps: Fewest denoising steps (PixArt's pipeline treats 1 step as a one-step distilled model).
    """

    name: str
    title: str
    pipelines: tuple[str, ...]
    denoiser: str
    negative_prompt: bool
    guidance: str
    schedulers: tuple[str, ...]
    tokenizers: tuple[str, ...]
    max_sequence_length: int | None
    cuda_dtype: str
    lora: bool
    controlnet: bool
    legacy_callback: bool = False
    min_steps: int = 1

    @property
    def default_scheduler(self) -> str:
        return self.schedulers[0]


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("sd", "Stable Diffusion 1.x/2.x", ("StableDiffusionPipeline",), "unet", True, "cfg",
           EPSILON_SCHEDULERS, ("tokenizer",), None, "float16", True, True),
    Family("sdxl", "Stable Diffusion XL", ("StableDiffusionXLPipeline",), "unet", True, "cfg",
           EPSILON_SCHEDULERS, ("tokenizer", "tokenizer_2"), None, "float16", True, True),
    Family("sd3", "Stable Diffusion 3", ("StableDiffusion3Pipeline",), "transformer", True, "cfg",
           FLOW_SCHEDULERS, ("tokenizer", "tokenizer_2", "tokenizer_3"), 256, "float16", True, False),
    Family("flux", "FLUX.1", ("FluxPipeline",), "transformer", False, "distilled",
           FLOW_SCHEDULERS, ("tokenizer", "tokenizer_2"), 512, "bfloat16", True, False),
    Family("pixart", "PixArt-α/Σ", ("PixArtAlphaPipeline", "PixArtSigmaPipeline"), "transformer", True, "cfg",
           EPSILON_SCHEDULERS, ("tokenizer",), 120, "float16", False, False, legacy_callback=True, min_steps=2),
    Family("kandinsky22", "Kandinsky 2.2 (prior + decoder)", ("KandinskyV22CombinedPipeline",), "unet", True, "cfg",
           ("dpm++", "unipc", "ddim"), ("prior_tokenizer",), None, "float16", True, False),
)}
"""Every supported family by name."""

_BY_CLASS = {cls: family for family in FAMILIES.values() for cls in family.pipelines}
KANDINSKY_PARTS = {"prior": "KandinskyV22PriorPipeline", "decoder": "KandinskyV22Pipeline"}


def pipeline_class(folder: Path) -> str:
    """The ``_class_name`` in ``folder/model_index.json``.

    Raises:
        UnknownFamily: If the file is missing, not JSON, or names no class.
    """
    index_file = Path(folder) / "model_index.json"
    try:
        name = json.loads(index_file.read_text()).get("_class_name")
    except FileNotFoundError as err:
        raise UnknownFamily(f"{folder} has no model_index.json; expected a diffusers pipeline folder") from err
    except (json.JSONDecodeError, AttributeError) as err:
        raise UnknownFamily(f"{index_file} is not a JSON object: {err}") from err
    if not isinstance(name, str):
        raise UnknownFamily(f"{index_file} names no pipeline class (_class_name)")
    return name


def family_of_class(name: str, where: Path | str) -> Family:
    """The family of a pipeline class name.

    Raises:
        UnknownFamily: Naming the class, where it was read and the classes supported.
    """
    if name in _BY_CLASS:
        return _BY_CLASS[name]
    supported = ", ".join(sorted(_BY_CLASS))
    raise UnknownFamily(f"{where}: pipeline class {name!r} is not a supported text-to-image family; supported: {supported}")


def detect_family(folder: Path) -> Family:
    """The family of a pipeline folder, or of a Kandinsky 2.2 folder holding ``prior/`` and ``decoder/``.

    Raises:
        UnknownFamily: If the folder is not a pipeline of a supported family.
    """
    folder = Path(folder)
    if is_kandinsky_pair(folder):
        return FAMILIES["kandinsky22"]
    return family_of_class(pipeline_class(folder), folder / "model_index.json")


def is_kandinsky_pair(folder: Path) -> bool:
    """True for a folder holding a Kandinsky 2.2 prior pipeline in ``prior/`` and its decoder in ``decoder/``."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        return False
    try:
        return all(pipeline_class(folder / part) == cls for part, cls in KANDINSKY_PARTS.items())
    except UnknownFamily:
        return False


def native_size(pipe, family: Family) -> tuple[int, int]:
    """The (width, height) the family's denoiser was built for: its sample size times the autoencoder's scale."""
    if family.name == "kandinsky22":
        scale = 2 ** (len(pipe.movq.config.block_out_channels) - 1)
        side = pipe.unet.config.sample_size * scale
    elif family.name == "flux":
        side = getattr(pipe, "default_sample_size", 128) * pipe.vae_scale_factor
    else:
        denoiser = getattr(pipe, family.denoiser)
        sample = denoiser.config.sample_size
        side = (sample[0] if isinstance(sample, (list, tuple)) else sample) * pipe.vae_scale_factor
    return int(side), int(side)


def token_limits(pipe, family: Family) -> list[tuple[str, object, int]]:
    """(component name, tokenizer, limit) for each tokenizer the prompt goes through."""
    limits = []
    for name in family.tokenizers:
        tokenizer = getattr(pipe, name, None)
        if tokenizer is not None:
            # The T5 encoder is cut at the max_sequence_length the pipeline is given; CLIP at its own limit.
            t5 = name == family.tokenizers[-1] and family.max_sequence_length is not None
            limits.append((name, tokenizer, family.max_sequence_length if t5 else int(tokenizer.model_max_length)))
    return limits


def prompt_cuts(pipe, family: Family, prompt: str) -> list[str]:
    """One note per tokenizer that cuts ``prompt``: which one, its limit and how many tokens the prompt has."""
    notes = []
    for name, tokenizer, limit in token_limits(pipe, family):
        count = len(tokenizer(prompt, add_special_tokens=True, truncation=False).input_ids)
        if count > limit:
            notes.append(f"prompt cut to {limit} of its {count} tokens by {name} ({type(tokenizer).__name__})")
    return notes
