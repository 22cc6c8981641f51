"""Property-based tests (hypothesis) of the two boundary loaders: params sections and images (docs/robustness.md)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from eqdiff import config as config_module
from eqdiff.config import ConfigError, MethodConfig, Section, section_to_dict
from eqdiff.prep.subjects import DataError, load_image

SECTIONS = sorted(
    (obj for obj in vars(config_module).values() if isinstance(obj, type) and issubclass(obj, Section) and obj.SECTION),
    key=lambda cls: cls.SECTION,
)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner))


@st.composite
def section_mappings(draw):
    """A section class and a mapping mixing its own keys (with arbitrary values) and stray keys."""
    cls = draw(st.sampled_from(SECTIONS))
    names = [f.name for f in dataclasses.fields(cls)]
    own = draw(st.dictionaries(st.sampled_from(names), values, max_size=4))
    stray = draw(st.dictionaries(st.one_of(st.text(max_size=6), st.integers(), st.none()), values, max_size=1))
    return cls, {**own, **stray} if draw(st.booleans()) else own


@PROPERTY
@given(section_mappings())
def test_params_sections_raise_only_config_errors(case):
    cls, mapping = case
    try:
        config = cls.from_mapping(mapping)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(cls.SECTION)
        return
    # A valid section round-trips through its dict form unchanged.
    assert cls.from_mapping(section_to_dict(config)) == config


@PROPERTY
@given(st.one_of(values, st.dictionaries(st.sampled_from(["train", "fdte", "model", "mgdp"]), values, max_size=3)))
def test_whole_params_mappings_raise_only_config_errors(params):
    try:
        config = MethodConfig.from_dict(params if isinstance(params, dict) else {"train": params})
    except ConfigError:
        return
    assert MethodConfig.from_dict(config.to_dict()) == config


@PROPERTY
@given(st.binary(max_size=2048), st.sampled_from([".png", ".jpg", ".webp", ".bmp"]))
def test_random_bytes_load_or_raise_data_error(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("bytes") / f"x{suffix}"
    path.write_bytes(data)
    try:
        image = load_image(path)
    except DataError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert image.mode == "RGB"


MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"]


@PROPERTY
@given(
    mode=st.sampled_from(MODES),
    width=st.integers(1, 200),
    height=st.integers(1, 200),
    fmt=st.sampled_from(["PNG", "JPEG", "TIFF", "WEBP", "BMP"]),
    orientation=st.sampled_from([1, 3, 6, 8]),
    seed=st.integers(0, 2**16),
)
def test_valid_images_load_as_rgb_in_display_orientation(tmp_path_factory, mode, width, height, fmt, orientation, seed):
    if mode == "YCbCr" and fmt == "TIFF":
        return  # Pillow writes YCbCr TIFFs it cannot read back itself (its writer's limit, not a user's file)
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB").convert(mode)
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    # TIFF keeps orientation in its own tag directory, not in an EXIF block: test it without one.
    extra = {} if fmt == "TIFF" else {"exif": exif.tobytes()}
    try:
        base.save(buffer, format=fmt, **extra)
    except (OSError, ValueError, KeyError):
        return  # this format cannot store this mode: not a valid image file to test
    path = tmp_path_factory.mktemp("images") / f"x.{fmt.lower()}"
    path.write_bytes(buffer.getvalue())
    with Image.open(path) as probe:
        stored = probe.size
        rotated = probe.getexif().get(0x0112, 1) in (6, 8)
    display = stored[::-1] if rotated else stored
    try:
        image = load_image(path)
    except DataError as exc:
        # Only a degenerate size may be refused, and the message says why.
        assert min(display) < 16 or max(display) / min(display) > 8, str(exc)
        assert "too small" in str(exc) or "aspect ratio" in str(exc)
        return
    assert image.mode == "RGB" and image.size == display
