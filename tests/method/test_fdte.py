"""FDTE invariants: injection, frequency vectors, band sampling, filter geometry (docs/method.md, FDTE)."""

from __future__ import annotations

import torch

from eqdiff.config import FdteConfig, FilterShape
from eqdiff.method.fdte import FrequencyBand, FrequencyEmbeddings, encode_prompt, low_pass_mask, sample_bands
from eqdiff.method.prompts import subject_prompt, tokenize
from eqdiff.models.components import add_placeholder_token


def test_injecting_the_tokens_own_embedding_reproduces_vanilla_clip(tiny_components):
    # docs/official-code.md §8.7: injection of <new>'s own row at its true position = vanilla CLIP output.
    placeholder_id, _ = add_placeholder_token(tiny_components, "<new1>", "ktn")
    ids = tokenize(tiny_components.tokenizer, ["photo of a <new1> cat toy", "a dog on the beach"])
    own = tiny_components.text_encoder.get_input_embeddings().weight[placeholder_id].expand(2, -1)
    vanilla = tiny_components.text_encoder(ids).last_hidden_state
    assert torch.equal(encode_prompt(tiny_components.text_encoder, ids, placeholder_id, own), vanilla)


def test_injection_lands_on_the_true_token_not_the_word_index(tiny_components):
    # docs/official-code.md §5.6: "Georgia O'Keeffe style {} painting" — word index 4, true token index 9.
    placeholder_id, _ = add_placeholder_token(tiny_components, "<new1>", "ktn")
    prompt = subject_prompt("Georgia O'Keeffe style {} painting", "<new1>", "toy")
    ids = tokenize(tiny_components.tokenizer, [prompt])
    assert ids[0].tolist().index(placeholder_id) == 9
    vector = torch.randn(1, 32)
    injected = encode_prompt(tiny_components.text_encoder, ids, placeholder_id, vector)
    vanilla = tiny_components.text_encoder(ids).last_hidden_state
    # Causal attention: positions before the placeholder are unchanged, from it on they differ.
    assert torch.equal(injected[0, :9], vanilla[0, :9])
    assert not torch.allclose(injected[0, 9], vanilla[0, 9])


def test_rows_without_the_placeholder_are_untouched(tiny_components):
    placeholder_id, _ = add_placeholder_token(tiny_components, "<new1>", "ktn")
    ids = tokenize(tiny_components.tokenizer, ["toy", "a <new1> toy"])
    out = encode_prompt(tiny_components.text_encoder, ids, placeholder_id, torch.randn(2, 32))
    assert torch.equal(out[0], tiny_components.text_encoder(ids).last_hidden_state[0])


def test_frequency_vectors_at_init_are_multiples_of_the_initializer():
    # docs/official-code.md §8.7: S_LF, S_HF, S_ori = e, e, 2e at init.
    e = torch.randn(32)
    embeddings = FrequencyEmbeddings(e)
    bands = torch.tensor([FrequencyBand.LOW, FrequencyBand.HIGH, FrequencyBand.FULL])
    assert torch.equal(embeddings(bands), torch.stack([e, e, 2 * e]))
    with torch.no_grad():
        embeddings.frequency_embeddings[1] += 1
    assert torch.equal(embeddings.s_ori, embeddings.frequency_embeddings[0] + embeddings.frequency_embeddings[1])
    single = FrequencyEmbeddings(e, decoupled=False)
    assert torch.equal(single(bands), e.expand(3, -1))


def test_band_sampling_frequencies_include_prior_rows():
    # docs/official-code.md §8.12: about 10/10/80 % per row, independently, prior rows included.
    generator = torch.Generator().manual_seed(0)
    is_prior = torch.tensor([True, True, False, False])
    draws = torch.stack([sample_bands(4, FdteConfig(), generator, is_prior) for _ in range(5000)])
    for row in range(4):
        freq = torch.bincount(draws[:, row], minlength=3).float() / len(draws)
        assert torch.allclose(freq, torch.tensor([0.1, 0.1, 0.8]), atol=0.02)
    prior_off = sample_bands(4, FdteConfig(apply_to_prior=False), generator, is_prior)
    assert (prior_off[:2] == FrequencyBand.FULL).all()
    assert (sample_bands(4, FdteConfig(enabled=False), generator) == FrequencyBand.FULL).all()


def test_box_low_pass_keeps_the_official_asymmetric_range():
    # docs/official-code.md §8.4: at 512 px the c=50 box keeps signed frequencies [-50, 49] on both axes.
    mask = low_pass_mask(512, 512, 50, FilterShape.BOX)
    kept = torch.nonzero(mask.any(dim=1)).flatten() - 256
    assert (kept.min().item(), kept.max().item(), mask.sum().item()) == (-50, 49, 100 * 100)
    # Cutoffs scale with the image side: 50 at 512 px is 6.25 → 6 at 64 px.
    assert low_pass_mask(64, 64, 50, FilterShape.BOX).sum().item() == 12 * 12
    circle = low_pass_mask(512, 512, 50, FilterShape.CIRCLE)
    assert circle[256, 306] and not circle[256 + 36, 256 + 36]
