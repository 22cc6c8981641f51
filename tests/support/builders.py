"""Builders of tiny real training recipes and concepts shared by the training and inference tests."""

from __future__ import annotations

import torch

from eqdiff.config import AugmentConfig, MethodConfig, ModelConfig
from eqdiff.io.schemas.concept import ConceptManifest
from eqdiff.method.rra import ReferenceBank
from eqdiff.models.components import load_components
from eqdiff.models.concept import attach_concept_modules, save_concept, trainable_parameters
from eqdiff.prep.subjects import discover_subject
from eqdiff.training.data import prepare_training_data
from eqdiff.training.recipe import EqDiffRecipe
from support.data import fast_params


def make_recipe(subject_dir, tmp_path, variant="F", prior=False, device="cpu", **train):
    params = fast_params(train={"variant": variant, "with_prior_preservation": prior, **train})
    config = MethodConfig.from_dict(params).resolved()
    components = load_components(config.model).to(device)
    subject = discover_subject(subject_dir, "toy")
    class_paths = sorted(subject_dir.glob("*.png"))[:2] if prior else []
    data = prepare_training_data(
        components.vae, subject, config, AugmentConfig(views_per_photo=2), class_paths, masks_dir=subject_dir / "masks"
    ).to(device)
    recipe = EqDiffRecipe(config, components, data, "toy", "toy", tmp_path / "work", progress=False)
    recipe.setup()
    return recipe


def perturbed_concept(tmp_path, seed=1):
    """A concept whose every trainable tensor is random (not a copy of the base weights)."""
    components = load_components(ModelConfig())
    embeddings, _ = attach_concept_modules(components, "<new1>", "ktn", rra=True, decoupled=True, bank=ReferenceBank())
    generator = torch.Generator().manual_seed(seed)
    weights = {
        n: p.detach() + 0.2 * torch.randn(p.shape, generator=generator)
        for n, p in trainable_parameters(components.unet, embeddings).items()
    }
    manifest = ConceptManifest(
        base_model=components.base_model_id,
        base_model_fingerprint=components.fingerprint,
        placeholder="<new1>",
        initializer_token="ktn",
        class_noun="toy",
        variant="F",
        rra=True,
        resolution=32,
        config={"model": {"preset": "tiny"}},
    )
    return save_concept(tmp_path / f"concept{seed}", weights, torch.zeros(3, 32, 32), manifest), weights
