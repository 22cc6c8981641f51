"""The tiny preset, the real CLIP vocabulary, placeholder tokens, and model-directory errors (docs/architecture.md,
Offline models and data)."""

from __future__ import annotations

import shutil

import pytest
import torch

from eqdiff.config import ModelConfig
from eqdiff.models.components import ModelError, add_placeholder_token, load_components
from eqdiff.models.presets import preset_directory


def test_clip_vocabulary_matches_openai_ids(tiny_components):
    # Provenance: docs/architecture.md, Offline models and data ("a photo of a cat" → [49406, 320, 1125, 539, 320,
    # 2368, 49407]).
    assert tiny_components.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tiny_components.tokenizer) == 49408


def test_placeholder_and_initializer_ids_match_official(tiny_components):
    # Provenance: docs/official-code.md §8.8 (ids verified with the CLIP BPE).
    placeholder_id, initializer_id = add_placeholder_token(tiny_components, "<new2>", "ktn")
    assert (placeholder_id, initializer_id) == (49408, 42170)
    ids = tiny_components.tokenizer("photo of a <new2> cat toy").input_ids
    assert ids == [49406, 1125, 539, 320, 49408, 2368, 5988, 49407]
    table = tiny_components.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[49408], table[42170])


def test_placeholder_already_in_vocabulary_is_an_error(tiny_components):
    with pytest.raises(ModelError, match="already in the tokenizer vocabulary"):
        add_placeholder_token(tiny_components, "cat</w>", "ktn")


def test_tiny_preset_has_sd_v1_attention_layout(tiny_components):
    names = list(tiny_components.unet.attn_processors)
    self_attention = [n for n in names if n.endswith("attn1.processor")]
    cross_attention = [n for n in names if n.endswith("attn2.processor")]
    mid_up = [n for n in self_attention if n.startswith(("mid_block.", "up_blocks."))]
    assert (len(self_attention), len(cross_attention), len(mid_up)) == (16, 16, 10)


def test_tiny_preset_is_seeded_and_loaded_from_its_directory(tmp_path):
    first = load_components(ModelConfig(seed=3, cache_dir=str(tmp_path / "a")))
    second = load_components(ModelConfig(seed=3, cache_dir=str(tmp_path / "b")))
    other = load_components(ModelConfig(seed=4, cache_dir=str(tmp_path / "a")))
    assert first.fingerprint == second.fingerprint != other.fingerprint
    assert (preset_directory(ModelConfig(seed=3, cache_dir=str(tmp_path / "a"))) / "unet" / "config.json").is_file()


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="not a local directory"):
        load_components(ModelConfig(preset="sd-v1", path=str(tmp_path / "nowhere")))


def test_incomplete_model_directory_names_missing_parts(tmp_path):
    source = preset_directory(ModelConfig())
    broken = tmp_path / "sd"
    shutil.copytree(source, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelError, match="missing vae/"):
        load_components(ModelConfig(preset="sd-v1", path=str(broken)))


def test_corrupt_model_weights_are_a_clear_error(tmp_path):
    broken = tmp_path / "sd"
    shutil.copytree(preset_directory(ModelConfig()), broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError, match="could not load the model"):
        load_components(ModelConfig(preset="sd-v1", path=str(broken)))


def test_a_real_layout_directory_loads_through_sd_v1(tmp_path):
    copy = tmp_path / "sd"
    shutil.copytree(preset_directory(ModelConfig()), copy)
    components = load_components(ModelConfig(preset="sd-v1", path=str(copy)))
    assert components.fingerprint == load_components(ModelConfig()).fingerprint
    assert components.native_resolution == 64
