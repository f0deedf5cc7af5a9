"""``--preset tiny|demo|base``: every preset builds, and ``--help`` shows its true parameter counts."""

from __future__ import annotations

import pytest
import torch

from generation import train
from generation.model import PRESET_PARAMETERS, PRESETS, CompactModelConfig, build_unet, build_vae


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_builds_with_the_parameter_counts_the_help_shows(name):
    config = PRESETS[name]
    with torch.device("meta"):  # the shapes without the memory: base is about 100 M parameters
        vae, unet = build_vae(config), build_unet(config)
    counted = (_count(vae), _count(unet))
    assert counted == PRESET_PARAMETERS[name], (
        f"PRESET_PARAMETERS[{name!r}] in generation/model.py must be {counted} (autoencoder, UNet), "
        f"not {PRESET_PARAMETERS[name]}")
    assert unet.config.sample_size == config.latent_size
    assert config.image_size // config.latent_size == 2 ** (len(config.vae_channels) - 1)


def test_the_presets_are_the_model_configurations_the_code_names():
    assert PRESETS["demo"] == CompactModelConfig()
    assert PRESETS["tiny"] == CompactModelConfig.tiny()
    assert PRESETS["base"].image_size == 256 and PRESETS["base"].latent_size == 32
    assert set(PRESET_PARAMETERS) == set(PRESETS)


def test_help_lists_every_preset_with_its_size(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, (vae, unet) in PRESET_PARAMETERS.items():
        assert f"{name}: {PRESETS[name].image_size} px" in text
        assert f"{vae / 1e6:.2f} M autoencoder + {unet / 1e6:.2f} M UNet parameters" in text


def test_tiny_is_an_alias_of_preset_tiny_and_contradictions_are_refused(capsys):
    base = ["--data", "d", "--out", "o"]
    assert train.parse_args([*base, "--tiny"]).preset == "tiny"
    assert train.parse_args([*base, "--preset", "tiny", "--tiny"]).preset == "tiny"
    assert train.parse_args(base).preset == "demo"
    with pytest.raises(SystemExit):
        train.parse_args([*base, "--tiny", "--preset", "base"])
    assert "--tiny" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args([*base, "--base", "sd", "--preset", "base"])
    assert "--preset" in capsys.readouterr().err


def test_plain_levels_have_no_cross_attention_and_at_least_one_level_keeps_it():
    demo = PRESETS["demo"]
    with torch.device("meta"):
        unet = build_unet(demo)
    assert unet.config.down_block_types == ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    assert unet.config.up_block_types == ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    with pytest.raises(ValueError, match="unet_plain_levels=3: a UNet of 4 levels needs 0 to 2 plain levels"):
        build_unet(CompactModelConfig(unet_plain_levels=3))
