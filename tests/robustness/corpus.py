"""The bad-input corpus (docs/robustness.md): every bad or odd input, the stage it is fed to, the outcome.

Each ``Case`` builds its inputs in a fresh folder and says how to run the stage on them (``harness.Invocation``).
A bad input must be refused: exit 2, one stderr line naming the file or field, no traceback, no output (and an
earlier output untouched). A valid odd input must be handled correctly (its ``check``). ``test_corpus.py`` runs
every case; ``table.py`` prints ``docs/robustness.md``'s table from the same definitions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from eqdiff.io.artifacts import load_tensors
from eqdiff.prep.sample import make_sample_subject
from eqdiff.prep.subjects import load_image
from robustness import corpus_artifacts as art
from robustness import corpus_limits, corpus_outputs, corpus_readback
from robustness.corpus_folders import mac_copy, stray_files
from robustness.harness import Case, Env, Invocation, make_subject, masks_run, train_run
from robustness.images import (
    BAD_PHOTOS,
    SIDE,
    exif_rotated_jpeg,
    jpeg_bytes,
    mask,
    photo,
    png_bytes,
    rgba_with_hole,
    write_odd_images,
)


# ------------------------------------------------------------------------------------------------ inputs
def refused_masks(extra: dict[str, bytes] | None = None, count: int = 2, **kw) -> callable:
    """A masks-stage run (files backend) on a generated subject that must be refused."""

    def build(env: Env, root: Path) -> Invocation:
        subject = make_subject(root, extra, count)
        for name in extra or {}:
            mask().save(subject / "masks" / f"{Path(name).stem}.png")
        return Invocation(masks_run(subject, root / "out", **kw), absent=[root / "out"])

    return build


def refused_train(*extra: str) -> callable:
    def build(env: Env, root: Path) -> Invocation:
        return Invocation(train_run(env.subject, root / "out", *extra), absent=[root / "out"])

    return build


# ---------------------------------------------------------------------------------------- valid odd images
def _mask_matches_photo(out: Path, photo_path: Path) -> None:
    image = load_image(photo_path)
    written = Image.open(out / f"{photo_path.stem}.png")
    assert written.size == image.size and written.mode == "L", (written.size, image.size)
    assert set(np.unique(np.asarray(written)).tolist()) <= {0, 255}


def odd_image(stem: str) -> callable:
    """A subject holding one valid odd photo (written by ``write_odd_images``) with a display-size mask."""

    def build(env: Env, root: Path) -> Invocation:
        subject = make_subject(root)
        odd = root / "odd"
        odd.mkdir()
        expected = write_odd_images(odd)[stem]
        source = next(odd.glob(f"{stem}.*"))
        target = subject / source.name
        shutil.copy(source, target)
        mask(load_image(target).size).save(subject / "masks" / f"{stem}.png")

        def check() -> None:
            loaded = load_image(target)
            assert loaded.mode == "RGB"
            if expected is not None:
                diff = np.abs(np.asarray(loaded, dtype=int) - np.asarray(expected, dtype=int)).max()
                assert diff <= 1, f"{stem}: differs from the expected RGB by {diff}"
            _mask_matches_photo(root / "out", target)

        return Invocation(masks_run(subject, root / "out"), check=check)

    return build


def exif_rotated(env: Env, root: Path) -> Invocation:
    """EXIF orientation 6 through ``bands``: the cached target is the display-orientation photo (red on top)."""
    subject = make_subject(root)
    (subject / "rotated.jpg").write_bytes(exif_rotated_jpeg())
    mask((SIDE[1], SIDE[0])).save(subject / "masks" / "rotated.png")  # display size 40x48

    def check() -> None:
        targets = load_tensors(root / "out" / "bands.safetensors")["targets"]
        rotated = targets[2]  # rows follow sorted file names: 00, 01, rotated
        top, bottom = rotated[:, 2, :], rotated[:, -3, :]
        assert top[0].mean() > 0.5 and top[2].mean() < -0.5, "top row is not red"
        assert bottom[2].mean() > 0.5 and bottom[0].mean() < -0.5, "bottom row is not blue"

    argv = ["--subject-dir", str(subject), "--masks", str(subject / "masks"), "--out", str(root / "out")]
    return Invocation(argv + ["-S", "train.resolution=32"], check=check)


def rgba_transparent(env: Env, root: Path) -> Invocation:
    """RGBA with a transparent left quarter through ``bands``: composited on white there."""
    subject = make_subject(root)
    rgba_with_hole().save(subject / "rgba.png")
    mask().save(subject / "masks" / "rgba.png")

    def check() -> None:
        target = load_tensors(root / "out" / "bands.safetensors")["targets"][2]
        # 48x40 -> short side 32 (48 -> 38), centre crop 3 px off the left: columns 0..5 are transparent.
        assert bool((target[:, :, :5] > 0.98).all()), "transparent pixels are not white"
        assert float(target[:, :, 12:].min()) < 0.5

    argv = ["--subject-dir", str(subject), "--masks", str(subject / "masks"), "--out", str(root / "out")]
    return Invocation(argv + ["-S", "train.resolution=32"], check=check)


# ------------------------------------------------------------------------------------------- subject folders
def empty_folder(env: Env, root: Path) -> Invocation:
    (root / "subject").mkdir()
    return Invocation(masks_run(root / "subject", root / "out"), absent=[root / "out"])


def unicode_names(env: Env, root: Path) -> Invocation:
    subject = make_subject(root)
    for name in ("föto 1.png", "写真 2.jpg"):
        photo(seed=7).save(subject / name) if name.endswith(".png") else (subject / name).write_bytes(
            jpeg_bytes(photo(seed=8))
        )
        mask().save(subject / "masks" / f"{Path(name).stem}.png")

    def check() -> None:
        for name in ("föto 1.png", "写真 2.jpg"):
            _mask_matches_photo(root / "out", subject / name)
        records = json.loads((root / "out" / "masks.json").read_text(encoding="utf-8"))["photos"]
        assert {"föto 1", "写真 2"} <= set(records)

    return Invocation(masks_run(subject, root / "out"), check=check)


def duplicate_stems(env: Env, root: Path) -> Invocation:
    subject = make_subject(root, {"00.jpg": jpeg_bytes(photo())})
    return Invocation(masks_run(subject, root / "out"), absent=[root / "out"])


def earlier_output_kept(env: Env, root: Path) -> Invocation:
    """A good masks output exists; a re-run after a corrupt photo was added is refused and leaves it intact."""
    subject = make_subject(root)
    from eqdiff import cli

    assert cli.main(["masks", *masks_run(subject, root / "out")]) == 0
    (subject / "zz.jpg").write_bytes(BAD_PHOTOS["truncated-jpeg"][1]())
    mask().save(subject / "masks" / "zz.png")
    return Invocation(masks_run(subject, root / "out"), untouched=[root / "out"])


# ------------------------------------------------------------------------------------------------- masks
def with_mask(stem: str, image: Image.Image | bytes, suffix: str = ".png", backend_files: bool = True) -> callable:
    """A subject whose mask for ``stem`` is replaced by ``image`` (an empty or wrong-size one is refused)."""

    def build(env: Env, root: Path) -> Invocation:
        subject = make_subject(root)
        (subject / "masks" / f"{stem}.png").unlink()
        target = subject / "masks" / f"{stem}{suffix}"
        target.write_bytes(image if isinstance(image, bytes) else png_bytes(image))
        return Invocation(masks_run(subject, root / "out"), absent=[root / "out"])

    return build


def full_mask(env: Env, root: Path) -> Invocation:
    invocation = with_mask("01", Image.new("L", SIDE, 255))(env, root)

    def check() -> None:
        warnings = json.loads((root / "out" / "masks.json").read_text())["warnings"]
        assert warnings and all(w.startswith("01.png: ") for w in warnings), warnings
        assert "01.png: mask covers 100.0% of the photo (> 95%); check overlay.png" in warnings, warnings

    return Invocation(invocation.argv, check=check)


def jpeg_noise_mask(env: Env, root: Path) -> Invocation:
    rng = np.random.default_rng(3)
    noise = Image.fromarray(rng.integers(0, 256, (SIDE[1], SIDE[0]), dtype=np.uint8), "L")
    invocation = with_mask("01", jpeg_bytes(noise), suffix=".jpg")(env, root)
    source = Path(invocation.argv[invocation.argv.index("-S") + 3].split("=", 1)[1]) / "01.jpg"

    def check() -> None:
        written = np.asarray(Image.open(root / "out" / "01.png"))
        assert set(np.unique(written).tolist()) == {0, 255}
        expected = np.asarray(Image.open(source).convert("L")) >= 128
        assert np.array_equal(written == 255, expected)

    return Invocation(invocation.argv, check=check)


def u2netp_blank_photo(env: Env, root: Path) -> Invocation:
    subject = make_sample_subject(root / "toy", num_photos=2)
    Image.new("RGB", SIDE, (128, 128, 128)).save(subject / "blank.png")
    return Invocation(masks_run(subject, root / "out", backend="u2netp"), absent=[root / "out"])


def u2netp_odd_subject(env: Env, root: Path) -> Invocation:
    """The sample toy photos, one saved as RGBA with a transparent strip and one as an EXIF-rotated JPEG."""
    subject = make_sample_subject(root / "toy", num_photos=3)
    rgba = Image.open(subject / "01.png").convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    alpha.paste(0, (0, 0, 4, rgba.height))
    rgba.putalpha(alpha)
    rgba.save(subject / "01.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = Image.open(subject / "02.png").convert("RGB")
    (subject / "02.png").unlink()
    (subject / "02.jpg").write_bytes(jpeg_bytes(rotated, exif=exif.tobytes()))

    def check() -> None:
        for name in ("00.png", "01.png", "02.jpg"):
            _mask_matches_photo(root / "out", subject / name)
        assert Image.open(root / "out" / "02.png").size == rotated.size[::-1]  # display orientation

    return Invocation(masks_run(subject, root / "out", backend="u2netp"), check=check)


def train_bad_mask(kind: str) -> callable:
    def build(env: Env, root: Path) -> Invocation:
        subject = make_sample_subject(root / "toy", num_photos=3)
        target = subject / "masks" / "01.png"
        size = Image.open(target).size
        bad = Image.new("L", size, 0) if kind == "empty" else mask((size[0] + 3, size[1]))
        bad.save(target)
        return Invocation(train_run(subject, root / "out"), absent=[root / "out"])

    return build


# ------------------------------------------------------------------------------------------------- the corpus
def _bad_photo(kind: str) -> Case:
    name, make = BAD_PHOTOS[kind]
    return Case(f"image: {kind}", "images", "masks", refused_masks({name: make()}), name)


CASES: list[Case] = [
    *(_bad_photo(kind) for kind in BAD_PHOTOS),
    *(
        Case(f"image: {label}", "images", "masks", odd_image(stem), None, handled)
        for stem, label, handled in [
            ("cmyk", "CMYK JPEG", "converted to RGB, mask at the photo's size"),
            ("grey16", "16-bit grey PNG", "scaled to 8-bit grey (no clipping), RGB"),
            ("palette", "palette PNG", "converted to its RGB colours"),
            ("grey", "8-bit grey PNG", "grey replicated to RGB"),
            ("rgba", "opaque RGBA PNG", "alpha dropped, colours unchanged"),
        ]
    ),
    Case("image: RGBA with transparency", "images", "bands", rgba_transparent, None, "transparent pixels white"),
    Case("image: EXIF-rotated JPEG", "images", "bands", exif_rotated, None, "EXIF orientation applied"),
    Case("subject: empty folder", "subject folders", "masks", empty_folder, "found 0 photo(s)"),
    Case("subject: one photo", "subject folders", "masks", refused_masks(count=1), "found 1 photo(s)"),
    Case("subject: missing folder", "subject folders", "masks", art.missing_subject, "subject folder not found"),
    Case("subject: stray non-image files", "subject folders", "masks", stray_files, None, "non-images ignored"),
    Case("subject: copied from a Mac (._*, .DS_Store)", "subject folders", "masks", mac_copy, None, "hidden skipped"),
    Case("subject: unicode and space names", "subject folders", "masks", unicode_names, None, "names kept"),
    Case("subject: two photos share a stem", "subject folders", "masks", duplicate_stems, "share a file stem"),
    Case(
        "subject: photo named overlay.png",
        "subject folders",
        "masks",
        refused_masks({"overlay.png": png_bytes(photo())}),
        "overlay.png",
    ),
    Case("subject: corrupt photo added, earlier output", "subject folders", "masks", earlier_output_kept, "zz.jpg"),
    Case("mask: wrong size", "masks", "masks", with_mask("01", mask((SIDE[0] + 1, SIDE[1]))), "01.png"),
    Case("mask: empty", "masks", "masks", with_mask("01", Image.new("L", SIDE, 0)), "01.png"),
    Case("mask: missing file", "masks", "masks", art.missing_mask, "01.png"),
    Case("mask: full", "masks", "masks", full_mask, None, "kept, warning in masks.json"),
    Case("mask: non-binary JPEG noise", "masks", "masks", jpeg_noise_mask, None, "binarised at 0.5"),
    Case("mask: u2netp on a blank photo", "masks", "masks", u2netp_blank_photo, "blank.png"),
    Case("mask: u2netp on RGBA + EXIF photos", "masks", "masks", u2netp_odd_subject, None, "display-size masks"),
    Case("mask: wrong size (train)", "masks", "train", train_bad_mask("size"), "01.png"),
    Case("mask: empty (train)", "masks", "train", train_bad_mask("empty"), "01.png"),
    Case("params: unknown key", "params", "train", refused_train("-S", "train.stepz=2"), "train.stepz"),
    Case("params: wrong type", "params", "train", refused_train("-S", "train.steps=many"), "train.steps"),
    Case("params: negative steps", "params", "train", refused_train("-S", "train.steps=-1"), "train.steps"),
    Case("params: p_l + p_h + p_o != 1", "params", "train", refused_train("-S", "fdte.p_l=0.5"), "fdte.p_l"),
    Case(
        "params: cutoff beyond Nyquist", "params", "bands", art.bands_override("fdte.cutoff_low=300"), "fdte.cutoff_low"
    ),
    Case("params: unknown enum value", "params", "masks", art.masks_backend("sam2"), "masks.backend"),
    Case(
        "params: section is not a mapping", "params", "augment", art.params_file("augment: 5\n", "augment"), "augment"
    ),
    Case("params: not YAML", "params", "train", art.params_file("train: [1,\n"), "params.yaml"),
    Case("params: malformed -S override", "params", "train", refused_train("-S", "trainsteps"), "trainsteps"),
    Case("params: file missing", "params", "train", art.missing_params, "params.yaml"),
    Case(
        "prompts: instance prompt without {}",
        "prompts",
        "train",
        refused_train("-S", "train.instance_prompt=photo of a toy"),
        "train.instance_prompt",
    ),
    Case(
        "prompts: instance prompt over 77 tokens",
        "prompts",
        "train",
        refused_train("-S", f"train.instance_prompt={art.LONG_PROMPT}"),
        "train.instance_prompt",
    ),
    Case(
        "prompts: placeholder already in the vocabulary",
        "prompts",
        "train",
        refused_train("-S", "concept.placeholder=cat"),
        "concept.placeholder",
    ),
    Case("prompts: empty class noun", "prompts", "prior", art.blank_class_noun, "--class-noun"),
    Case(
        "prompts: file line without {}", "prompts", "generate", art.prompt_file(b"a {} here\na dog\n"), "prompts.txt:2"
    ),
    Case(
        "prompts: file prompt over 77 tokens",
        "prompts",
        "generate",
        art.prompt_file(art.LONG_PROMPT.encode()),
        "prompts.txt:1",
    ),
    Case("prompts: file not UTF-8", "prompts", "generate", art.prompt_file(b"a {} \xff\xfe\n"), "prompts.txt"),
    Case("prompts: file missing", "prompts", "generate", art.prompt_file(None), "prompts.txt"),
    Case("prompts: --prompts without SET=", "prompts", "generate", art.malformed_prompt_spec, "--prompts"),
    Case("model: directory missing", "models and concepts", "train", art.model_dir("missing", "train"), "model.path"),
    Case("model: wrong components", "models and concepts", "prior", art.model_dir("components"), "missing"),
    Case("model: truncated safetensors", "models and concepts", "prior", art.model_dir("truncated"), "could not load"),
    Case("concept: directory missing", "models and concepts", "generate", art.concept("missing"), "concept"),
    Case(
        "concept: truncated safetensors",
        "models and concepts",
        "generate",
        art.concept("truncated"),
        "concept.safetensors",
    ),
    Case("concept: manifest not JSON", "models and concepts", "generate", art.concept("manifest"), "concept.json"),
    Case(
        "concept: from another base model",
        "models and concepts",
        "generate",
        art.concept("foreign"),
        "trained on base model",
    ),
    Case("bands: from another base model", "models and concepts", "train", art.foreign_bands, "bands.json"),
    Case(
        "checkpoint: truncated, same run", "models and concepts", "train", art.truncated_checkpoint, "state.safetensors"
    ),
    Case(
        "evaluate: model directory missing",
        "models and concepts",
        "evaluate",
        art.evaluate_models("missing"),
        "evaluate.clip_model",
    ),
    Case(
        "evaluate: model of the wrong type",
        "models and concepts",
        "evaluate",
        art.evaluate_models("bert"),
        "evaluate.clip_model",
    ),
    Case("evaluate: samples folder missing", "models and concepts", "evaluate", art.missing_samples, "no-samples"),
    Case("output: --out is a user's folder", "outputs", "generate", art.foreign_samples_folder, "holiday"),
    Case("output: class images without manifest", "outputs", "prior", art.foreign_class_images, "classes"),
    Case("prior: real class image corrupt", "images", "prior", art.real_class_images("corrupt"), "b.jpg"),
    Case(
        "prior: too few real class images",
        "subject folders",
        "prior",
        art.real_class_images("few"),
        "found 1 class image",
    ),
    *corpus_outputs.CASES,
    *corpus_readback.PARAMS_CASES,
    *corpus_limits.CASES,
    *corpus_readback.ARTEFACT_CASES,
]
"""Every case of the corpus, in table order."""
