"""Every GPU path places its tensors on the GPU: the forward of each, on an emulated CUDA device, on a CPU.

Inputs are built on the host exactly as the stages build them (components loaded, training data prepared,
batches drawn, images read), then moved with the same calls the stages make (``Components.to``,
``TrainingData.to``, ``EqDiffPipeline.from_concept``), and each path runs under ``emulated_cuda``: the first op that
mixes a CUDA tensor with a CPU one, or two dtypes in one kernel, raises. The emulated device is an H200 (bf16
supported), so training runs under the default ``auto`` policy: bf16 autocast with the frozen UNet stored in
bf16, and inference in bf16.
"""

from __future__ import annotations

import pytest
import torch
from support.data import fast_params
from support.emulated_cuda import DtypeMismatchError, emulated_cuda
from support.metric_models import small_clip_config, small_dino_config
from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError

from eqdiff.config import (
    AugmentConfig,
    EvaluateConfig,
    FdteConfig,
    MethodConfig,
    MixedPrecision,
    PriorConfig,
    TrainConfig,
)
from eqdiff.evaluation.evaluate import embed_images, embed_texts, load_metric_models
from eqdiff.models.components import load_components
from eqdiff.models.concept import load_concept
from eqdiff.models.precision import inference_dtype
from eqdiff.pipelines.eqdiff_pipeline import EqDiffPipeline, image_generator
from eqdiff.prep import bands, prior
from eqdiff.prep.subjects import discover_subject
from eqdiff.training.data import prepare_training_data, sample_batch
from eqdiff.training.recipe import EqDiffRecipe

CUDA = torch.device("cuda")


def host_training_inputs(subject_dir, variant: str):
    """Config, CPU components and data, and step 0's batch: what ``eqdiff train`` has before it moves them."""
    config = MethodConfig.from_dict(fast_params(train={"variant": variant, "with_prior_preservation": True}))
    config = config.resolved()
    components = load_components(config.model)
    subject = discover_subject(subject_dir, "toy")
    class_paths = sorted(subject_dir.glob("*.png"))[:2]
    data = prepare_training_data(
        components.vae, subject, config, AugmentConfig(views_per_photo=2), class_paths, masks_dir=subject_dir / "masks"
    )
    batch = sample_batch(data, config, 0, components.noise_scheduler.config.num_train_timesteps)
    return config, components, data, batch


# ----------------------------------------------------------------------------------------------------------
# The emulation itself raises where a GPU would (otherwise every test below could not fail).


def test_emulated_cuda_raises_on_mixed_devices_and_dtypes():
    layer, half_layer = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3).to(torch.bfloat16)
    host = torch.randn(2, 4)
    with emulated_cuda():
        layer.to(CUDA)
        half_layer.to(CUDA)
        with pytest.raises(FakeTensorDeviceMismatchError):
            layer(host)
        assert layer(host.to(CUDA)).device.type == "cuda"
        with pytest.raises(DtypeMismatchError):
            half_layer(host.to(CUDA))
        with torch.autocast("cuda", dtype=torch.bfloat16):  # autocast sees the emulated device
            assert layer(host.to(CUDA)).dtype == torch.bfloat16
            assert half_layer(host.to(CUDA)).dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------------------
# The five paths.


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["A", "F"])
def test_training_step_forward_runs_on_cuda(variant, subject_dir, tmp_path):
    """Prior rows, FDTE bands, MGDP, the reference pass, L_ra and L_ca (F); plain Custom Diffusion (A)."""
    config, components, data, batch = host_training_inputs(subject_dir, variant)
    with emulated_cuda():
        components.to(CUDA)
        data.to(CUDA)
        recipe = EqDiffRecipe(config, components, data, "toy", "toy", tmp_path / "work", progress=False)
        recipe.setup()
        losses = recipe.training_step(batch)
        # The next step's batch is drawn from the moved data on the host: it reads nothing from the device.
        recipe.training_step(sample_batch(data, config, 1, components.noise_scheduler.config.num_train_timesteps))
    assert recipe.amp_dtype == torch.bfloat16
    assert {p.device.type for p in recipe.parameters.values()} == {"cuda"}
    assert {p.dtype for p in recipe.parameters.values()} == {torch.float32}  # trainable weights stay fp32
    assert components.unet.conv_in.weight.dtype == torch.bfloat16  # frozen UNet stored in the autocast dtype
    for name, value in losses.items():
        assert value.device.type == "cuda" and value.dtype == torch.float32, name
    if variant == "F":
        assert recipe.bank.reference_maps and recipe.bank.cross_maps  # L_ra and L_ca were computed


@pytest.fixture
def host_concept(subject_dir, tmp_path):
    """An (untrained) F concept saved on disk, loaded back on the host with its base components."""
    config, components, data, _ = host_training_inputs(subject_dir, "F")
    recipe = EqDiffRecipe(config, components, data, "toy", "toy", tmp_path / "work", progress=False)
    recipe.setup()
    concept_dir = recipe.save(tmp_path / "concept")
    return load_concept(concept_dir), load_components(config.model)


@pytest.mark.slow
@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "two-call"])
def test_pipeline_call_runs_on_cuda(fuse, host_concept):
    concept, components = host_concept
    generators = [image_generator(0, i, 0) for i in range(2)]  # CPU generators, as the generate stage makes
    with emulated_cuda():
        dtype = inference_dtype(MixedPrecision.AUTO, CUDA)
        pipe = EqDiffPipeline.from_concept(concept, components, device=CUDA, dtype=dtype)
        images = pipe(
            ["a <new1> toy", "a watercolor painting of a <new1> toy"],
            generator=generators,
            num_inference_steps=2,
            height=32,
            output_type="pt",
            progress=False,
            fuse_reference=fuse,
        ).images
    assert dtype == torch.bfloat16 and pipe.unet.dtype == torch.bfloat16
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32


@pytest.mark.slow
def test_class_image_generation_runs_on_cuda(tiny_components, monkeypatch):
    config = PriorConfig(num_inference_steps=2)
    pipeline = prior.build_pipeline(tiny_components, config.scheduler)
    # diffusers' pipeline puts the scheduler's timesteps on the device and indexes the host alphas with them: a
    # read of a device value that a real GPU does (with a sync each step) and fake tensors cannot. Keep them on
    # the host here.
    scheduler = type(pipeline.scheduler)
    set_timesteps = scheduler.set_timesteps
    monkeypatch.setattr(scheduler, "set_timesteps", lambda self, steps, device=None: set_timesteps(self, steps))
    with emulated_cuda():
        tiny_components.to(CUDA)  # as the prior stage does where CUDA is available
        images = prior.sample_class_images(pipeline, "a photo of a toy", [0, 1], config, 32, output_type="pt")
    assert images.shape == (2, 3, 32, 32)


def test_band_encoding_runs_on_cuda(subject_dir, tiny_components):
    subject = discover_subject(subject_dir, "toy")
    targets, masks = bands._load_targets(subject, subject_dir / "masks", 32, TrainConfig().resize)
    with emulated_cuda():
        tiny_components.vae.to(CUDA)  # as the bands stage does where CUDA is available
        tensors = bands.band_tensors(targets, masks, tiny_components.vae, FdteConfig())
    assert tensors["full_mean"].device.type == "cpu" and tensors["low"].shape == targets.shape


def test_metric_embedding_runs_on_cuda(subject_dir):
    models = load_metric_models(EvaluateConfig(), small_clip_config(), small_dino_config(), device="cpu")
    photos = sorted(subject_dir.glob("*.png"))
    with emulated_cuda():
        for module in (models.clip, models.dino):  # what load_metric_models(device="cuda") does
            module.to(device=CUDA, dtype=torch.float32)
        clip_images, dino_images = embed_images(photos, models, batch_size=2)
        texts = embed_texts(["a toy on the beach", "a watercolor painting of a toy"], models, batch_size=2)
    assert clip_images.shape[0] == dino_images.shape[0] == len(photos) and texts.shape[0] == 2
    assert clip_images.device.type == "cpu"
