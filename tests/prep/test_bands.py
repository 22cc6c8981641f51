"""Band images and the band cache (paper §4.1; docs/method.md, FDTE; docs/official-code.md §2.2 and §8.4)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from support.data import DREAMBOOTH, requires_dreambooth

from eqdiff.config import FdteConfig, ModelConfig
from eqdiff.io.artifacts import ArtifactError
from eqdiff.method.fdte import band_images, band_posteriors, band_spectra
from eqdiff.prep.bands import POSTERIOR_KEYS, compute_band_cache, load_band_cache
from eqdiff.prep.subjects import discover_subject, preprocess_target


def _smooth_image(side: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, side, side) in [-1, 1]: blurred noise plus sharp rectangles, so both bands carry content."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, side // 16, side // 16, generator=gen) * 2 - 1
    image = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    image[..., side // 4 : side // 2, side // 3 : side // 2 + 7] = 0.9
    image[..., side // 2 :, : side // 5] = -0.8
    return image.clamp(-1, 1)


@pytest.mark.parametrize("shape", ["box", "circle"])
@pytest.mark.parametrize("colour", ["grey", "rgb"])
@pytest.mark.parametrize("cutoff", [5.0, 37.5, 50.0])
@pytest.mark.parametrize("size", [(64, 64), (96, 80)])
def test_low_plus_high_reconstructs_the_input_before_the_modulus(shape, colour, cutoff, size):
    # with equal cutoffs the high-pass is the exact complement of the low-pass,
    # so the complex bands partition the spectrum and sum to the (grey or colour) input to 1e-5.
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    config = FdteConfig(shape=shape, colour=colour, cutoff_low=cutoff, cutoff_high=cutoff)
    low, high = band_spectra(images, config)
    expected = images.mean(dim=1, keepdim=True) if colour == "grey" else images
    total = low + high
    assert (total.real - expected).abs().max() < 1e-5
    assert total.imag.abs().max() < 1e-5
    assert (low.real - expected).abs().max() > 1e-2  # the bands themselves are not the image


def official_fft_filtering(images: np.ndarray, cutoff_low: int = 50, cutoff_high: int = 5):
    """The official ``fft_filtering`` (docs/official-code.md §2.2), re-typed in NumPy float64.

    Grey = unweighted channel mean repeated x3; ``np.fft.fft2`` over the last two axes; ``fftshift`` with no
    ``axes`` (all axes shifted); box masks centred at (256, 256): low-pass keeps rows/cols [256-c, 256+c),
    high-pass zeroes the same box of its own c; ``ifftshift``, ``ifft2``, ``np.abs``. No clamping.
    """
    grey = np.repeat(images.astype(np.float64).mean(axis=1, keepdims=True), 3, axis=1)
    spectrum = np.fft.fftshift(np.fft.fft2(grey))
    height, width = grey.shape[-2:]
    cy, cx = height // 2, width // 2  # (256, 256) at 512 px
    low_mask = np.zeros((height, width))
    low_mask[cy - cutoff_low : cy + cutoff_low, cx - cutoff_low : cx + cutoff_low] = 1
    high_mask = np.ones((height, width))
    high_mask[cy - cutoff_high : cy + cutoff_high, cx - cutoff_high : cx + cutoff_high] = 0

    def inverse(mask: np.ndarray) -> np.ndarray:
        return np.abs(np.fft.ifft2(np.fft.ifftshift(spectrum * mask)))

    return inverse(low_mask), inverse(high_mask), grey


def _assert_matches_official(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    low, high = band_images(images, FdteConfig())  # defaults: box, grey, abs, cutoffs 50 / 5 (official)
    ref_low, ref_high, grey = official_fft_filtering(images.numpy())
    # float32 torch.fft vs float64 numpy: measured max difference ~4e-7 on DreamBooth photos; 1e-5 bound.
    assert np.abs(low.numpy() - ref_low).max() < 1e-5
    assert np.abs(high.numpy() - ref_high).max() < 1e-5
    return ref_low, ref_high, grey


def test_default_bands_match_the_official_filter_on_a_synthetic_512_image():
    ref_low, ref_high, grey = _assert_matches_official(_smooth_image(512))
    assert ref_low.min() >= 0 and ref_high.min() >= 0  # modulus output (docs/official-code.md §8.4)


@requires_dreambooth
def test_default_bands_match_the_official_filter_on_a_dreambooth_photo():
    photo = DREAMBOOTH / "can" / "00.jpg"
    target, _ = preprocess_target(photo, None, 512)
    ref_low, ref_high, grey = _assert_matches_official(target[None])
    # docs/official-code.md §2.2 (checked on the authors' images): LF in [0, ~1.07], HF in [0, ~1.5], and
    # |LF50| + |HF5| != grey (mean abs error ~0.38). Measured here on can/00.jpg: LF max 1.074, HF max 1.601, mean
    # |LF + HF - grey| 0.410. The bounds below leave margin for JPEG decoder differences.
    assert ref_low.min() >= 0 and ref_low.max() < 1.25
    assert ref_high.min() >= 0 and ref_high.max() < 2.0
    assert np.abs(ref_low + ref_high - grey).mean() > 0.2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("shape", ["box", "circle"])
@pytest.mark.parametrize("output", ["abs", "real"])
def test_bands_agree_on_cpu_and_cuda(shape, output):
    images = _smooth_image(512).repeat(2, 1, 1, 1)
    config = FdteConfig(shape=shape, output=output)
    cpu_low, cpu_high = band_images(images, config)
    gpu_low, gpu_high = band_images(images.cuda(), config)
    assert (gpu_low.cpu() - cpu_low).abs().max() < 1e-5
    assert (gpu_high.cpu() - cpu_high).abs().max() < 1e-5


def test_band_cache_round_trip(subject_dir, tiny_components, tmp_path):
    subject = discover_subject(subject_dir, "toy")
    config = FdteConfig(shape="circle", colour="rgb", output="real", cutoff_low=40, cutoff_high=40)
    out = compute_band_cache(subject, subject_dir / "masks", tmp_path / "bands", 64, ModelConfig(), config)
    cache = load_band_cache(out, tiny_components.fingerprint, 64, fdte=config)
    assert cache["stems"] == ["00", "01", "02"]
    assert cache["targets"].shape == (3, 3, 64, 64) and cache["masks"].shape == (3, 1, 64, 64)
    assert set(cache["masks"].unique().tolist()) <= {0.0, 1.0}
    low, high = band_images(cache["targets"], config)
    assert torch.equal(cache["low"], low) and torch.equal(cache["high"], high)
    expected = band_posteriors(tiny_components.vae, cache["targets"], config)
    for name in POSTERIOR_KEYS:
        assert cache[name].shape == (3, 4, 32, 32)
        torch.testing.assert_close(cache[name], expected[name], atol=1e-5, rtol=1e-5)
    assert not torch.equal(cache["low_mean"], cache["high_mean"])


def test_load_band_cache_refuses_mismatches_and_corruption(subject_dir, tiny_components, tmp_path):
    subject = discover_subject(subject_dir, "toy")
    out = compute_band_cache(subject, subject_dir / "masks", tmp_path / "bands", 64, ModelConfig(), FdteConfig())
    with pytest.raises(ArtifactError, match="base model"):
        load_band_cache(out, "0000000000000000", 64)
    with pytest.raises(ArtifactError, match="64 px, expected 128 px"):
        load_band_cache(out, tiny_components.fingerprint, 128)
    with pytest.raises(ArtifactError, match="band options"):
        load_band_cache(out, tiny_components.fingerprint, 64, fdte=dataclasses.replace(FdteConfig(), cutoff_low=40))
    data = (out / "bands.safetensors").read_bytes()
    (out / "bands.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="bands.safetensors: not a valid safetensors file"):
        load_band_cache(out, tiny_components.fingerprint, 64)
    (out / "bands.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="bands.json: not valid JSON"):
        load_band_cache(out, tiny_components.fingerprint, 64)


def test_targets_are_centre_cropped_by_default_and_squashed_as_an_option(tmp_path):
    # docs/official-code.md §1.2: PIL bilinear to side × side (aspect ratio lost); ours by default: bicubic short
    # side + crop.
    from PIL import Image

    from eqdiff.config import ResizeMode, TrainConfig
    from eqdiff.prep.subjects import center_crop_resize, image_to_tensor

    generator = np.random.default_rng(0)
    photo = tmp_path / "wide.png"
    Image.fromarray(generator.integers(0, 256, (40, 64, 3), dtype=np.uint8)).save(photo)
    image = Image.open(photo).convert("RGB")
    assert TrainConfig().resize == ResizeMode.CROP
    crop, _ = preprocess_target(photo, None, 32)
    squash, _ = preprocess_target(photo, None, 32, ResizeMode.SQUASH)
    assert torch.equal(crop, image_to_tensor(center_crop_resize(image, 32)))
    assert torch.equal(squash, image_to_tensor(image.resize((32, 32), Image.Resampling.BILINEAR)))
    assert not torch.equal(crop, squash)
