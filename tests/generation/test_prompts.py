"""Prompt templates are data in assets/, with clinical vocabulary."""

from __future__ import annotations

import json

import pytest

from generation.prompts import PromptTemplateError, load_prompts


def test_default_prompts_carry_clinical_vocabulary():
    book = load_prompts()
    ad, non_ad = book.default_prompt("AD"), book.default_prompt("NonAD")
    for word in ("Paris", "mm", "NICE type"):
        assert word in ad and word in non_ad
    assert "adenomatous" in ad and "non-adenomatous" in non_ad


def test_fill_uses_attributes_or_falls_back_to_the_short_prompt():
    book = load_prompts()
    filled = book.fill("AD", {"paris": "0-Ip", "size_mm": 15, "nice": 2, "location": "rectum"})
    assert "0-Ip" in filled and "15 mm" in filled and "rectum" in filled
    assert book.fill("AD", {"paris": "0-Ip"}) == book.labels["AD"]["short"]
    with pytest.raises(ValueError, match="valid labels"):
        book.fill("SSL", {})


def test_a_broken_prompts_file_is_named(tmp_path):
    with pytest.raises(PromptTemplateError, match="does not exist"):
        load_prompts(tmp_path / "missing.json")
    (tmp_path / "p.json").write_text(json.dumps({"generic": "x", "labels": {"AD": {"short": "a", "template": "b"}}}))
    with pytest.raises(PromptTemplateError, match="labels.NonAD"):
        load_prompts(tmp_path / "p.json")
