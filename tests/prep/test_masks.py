"""Subject masks: u2netp on real weights, the files backend, grounded-sam on tiny random-config models built
offline and loaded by path through the same code a real checkpoint goes through (docs/architecture.md, Offline models
and data; docs/robustness.md)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.data import DREAMBOOTH, requires_dreambooth

from eqdiff import cli
from eqdiff.config import ConfigError, MasksConfig
from eqdiff.errors import DataError, EqDiffError
from eqdiff.io.artifacts import ArtifactError, OutputLock
from eqdiff.io.manifests import file_digest
from eqdiff.prep.masks import compute_masks
from eqdiff.prep.subjects import discover_subject
from eqdiff.prep.u2netp import U2NETP_SHA256, u2netp_path


def _mask(path: Path) -> np.ndarray:
    image = Image.open(path)
    assert image.mode == "L"
    array = np.asarray(image)
    assert set(np.unique(array)) <= {0, 255}
    return array == 255


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# ------------------------------------------------------------------------------------------------ u2netp


def test_u2netp_file_is_the_pinned_one():
    assert file_digest(u2netp_path()) == U2NETP_SHA256


def test_u2netp_masks_match_the_drawn_subject(subject_dir: Path, tmp_path: Path):
    subject = discover_subject(subject_dir, "toy")
    out = compute_masks(subject, tmp_path / "masks", MasksConfig())
    record = json.loads((out / "masks.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["00.png", "01.png", "02.png", "masks.json", "overlay.png"]
    for photo in subject.photos:
        mask = _mask(out / f"{photo.stem}.png")
        truth = np.asarray(Image.open(subject_dir / "masks" / photo.name)) > 127
        assert mask.shape == truth.shape  # the photo's own size, (H, W)
        # The synthetic toy is the only salient object: U²-Netp must find it (measured IoU ~0.99).
        assert _iou(mask, truth) > 0.9
        entry = record["photos"][photo.stem]
        assert entry["backend"] == "u2netp" and entry["threshold"] == 0.5 and entry["refined"] is True
        assert entry["checks"] == []
        assert entry["foreground_fraction"] == pytest.approx(mask.mean(), abs=1e-6)
    assert record["warnings"] == []
    sheet = Image.open(out / "overlay.png")
    assert sheet.size == (2 * 258 + 2, 2 * 258 + 2)  # 3 tiles of 256 in a 2x2 grid, 2 px gaps


def test_unchanged_inputs_rewrite_nothing_and_changes_recompute(subject_dir: Path, tmp_path: Path):
    subject = discover_subject(subject_dir, "toy")
    out = compute_masks(subject, tmp_path / "masks", MasksConfig())
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    compute_masks(subject, out, MasksConfig())
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    compute_masks(subject, out, MasksConfig(threshold=0.9))
    assert json.loads((out / "masks.json").read_text())["photos"]["00"]["threshold"] == 0.9


def test_a_second_writer_refuses(subject_dir: Path, tmp_path: Path):
    subject = discover_subject(subject_dir, "toy")
    with OutputLock(tmp_path / "masks"), pytest.raises(ArtifactError, match="another run"):
        compute_masks(subject, tmp_path / "masks", MasksConfig())


@requires_dreambooth
@pytest.mark.slow
@pytest.mark.parametrize("name", ["candle", "clock", "dog3"])
def test_u2netp_foreground_fraction_on_dreambooth(name: str, tmp_path: Path):
    """The three subjects with the smallest foreground fractions (measured over all 25: 0.032-0.605)."""
    classes = dict(
        line.split(",", 1)
        for line in (DREAMBOOTH / "prompts_and_classes.txt").read_text().splitlines()
        if line.count(",") == 1 and not line.startswith("subject_name")
    )
    out = compute_masks(discover_subject(DREAMBOOTH / name, classes[name]), tmp_path / name, MasksConfig())
    fractions = [p["foreground_fraction"] for p in json.loads((out / "masks.json").read_text())["photos"].values()]
    assert fractions and all(0.02 < f < 0.95 for f in fractions), fractions


# ------------------------------------------------------------------------------------------------- files


def _files_config(directory: Path) -> MasksConfig:
    return MasksConfig(backend="files", files_dir=str(directory))


def test_files_backend_copies_user_masks_and_warns_on_full_ones(subject_dir: Path, tmp_path: Path):
    subject = discover_subject(subject_dir, "toy")
    full = Image.open(subject_dir / "masks" / "01.png").point(lambda _: 255)
    full.save(subject_dir / "masks" / "01.png")
    out = compute_masks(subject, tmp_path / "masks", _files_config(subject_dir / "masks"))
    for photo in subject.photos:
        given = np.asarray(Image.open(subject_dir / "masks" / photo.name)) > 127
        assert np.array_equal(_mask(out / photo.name), given)
    warnings = json.loads((out / "masks.json").read_text())["warnings"]
    # the full mask is over max_foreground_warn, far from the median area and runs along every border
    assert all(w.startswith("01.png: ") for w in warnings) and len(warnings) == 3
    assert "01.png: mask covers 100.0% of the photo (> 95%); check overlay.png" in warnings


def test_files_backend_errors_name_the_file_and_leave_no_output(subject_dir: Path, tmp_path: Path):
    subject = discover_subject(subject_dir, "toy")
    empty = subject_dir / "masks" / "02.png"
    Image.open(empty).point(lambda _: 0).save(empty)
    with pytest.raises(DataError, match=re.escape(f"{empty}: mask is empty")):
        compute_masks(subject, tmp_path / "masks", _files_config(subject_dir / "masks"))
    assert not (tmp_path / "masks").exists()
    empty.unlink()
    with pytest.raises(DataError, match="no mask for photo 02.png"):
        compute_masks(subject, tmp_path / "masks", _files_config(subject_dir / "masks"))
    assert not (tmp_path / "masks").exists()


def test_config_requires_the_backends_paths():
    with pytest.raises(ConfigError, match="masks.files_dir: expected a local path"):
        MasksConfig(backend="files")
    with pytest.raises(ConfigError, match="masks.grounding_dino_config"):
        MasksConfig(backend="grounded-sam")
    with pytest.raises(ConfigError, match="masks.backend: expected one of u2netp | grounded-sam | files"):
        MasksConfig(backend="rembg")
    with pytest.raises(ConfigError, match="masks.treshold: unknown key"):
        MasksConfig.from_mapping({"treshold": 0.5})


def test_cli_writes_masks_and_reports_user_errors(subject_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "masks"
    argv = ["masks", "--subject-dir", str(subject_dir), "--class-noun", "toy", "--out", str(out)]
    files = ["-S", "masks.backend=files", "-S", f"masks.files_dir={subject_dir / 'masks'}"]
    assert cli.main([*argv, *files]) == 0
    assert (out / "overlay.png").is_file()
    assert cli.main([*argv, "-S", "masks.threshold=2"]) == 2
    assert "masks.threshold: expected a number in (0, 1), got 2.0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ grounded-sam

# GroundingDINO's text path is hard-wired to 256 channels (transformer.py's text position embedding), so the tiny
# detector keeps hidden_dim 256 and the Swin-T backbone (the smallest it offers) and shrinks everything else.
TINY_GROUNDING_DINO = """
modelname = "groundingdino"
backbone = "swin_T_224_1k"
position_embedding = "sine"
pe_temperatureH = 20
pe_temperatureW = 20
return_interm_indices = [1, 2, 3]
backbone_freeze_keywords = None
enc_layers = 1
dec_layers = 1
pre_norm = False
dim_feedforward = 64
hidden_dim = 256
dropout = 0.0
nheads = 8
num_queries = 20
query_dim = 4
num_patterns = 0
num_feature_levels = 4
enc_n_points = 4
dec_n_points = 4
two_stage_type = "standard"
two_stage_bbox_embed_share = False
two_stage_class_embed_share = False
transformer_activation = "relu"
dec_pred_bbox_embed_share = True
dn_box_noise_scale = 1.0
dn_label_noise_ratio = 0.5
dn_label_coef = 1.0
dn_bbox_coef = 1.0
embed_init_tgt = True
dn_labelbook_size = 2000
max_text_len = 256
text_encoder_type = "bert-base-uncased"
use_text_enhancer = True
use_fusion_layer = True
use_checkpoint = False
use_transformer_ckpt = False
use_text_cross_attention = True
text_dropout = 0.0
fusion_dropout = 0.0
fusion_droppath = 0.1
sub_sentence_present = True
"""


def _build_tiny_sam(checkpoint: str | None = None):
    """A SAM with the real architecture classes at tiny widths (64 px input), random weights."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    assert checkpoint is None  # the loader must build empty and load the state dict itself
    dim = 32
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=64,
            patch_size=16,
            embed_dim=32,
            depth=1,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=dim,
            qkv_bias=True,
            norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            global_attn_indexes=(0,),
            window_size=0,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(4, 4), input_image_size=(64, 64), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim,
            iou_head_depth=1,
            iou_head_hidden_dim=16,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


@pytest.fixture(scope="module")
def tiny_grounded_sam(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny GroundingDINO + SAM files on disk: config, checkpoints and a BERT directory, all built offline."""
    from transformers import BertConfig, BertModel, BertTokenizer

    from eqdiff.prep.grounded_sam import build_grounding_dino

    root = tmp_path_factory.mktemp("grounded-sam")
    bert_dir = root / "bert"
    bert_dir.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", "toy", "dog", "a"]
    (bert_dir / "vocab.txt").write_text("\n".join(vocab + [chr(c) for c in range(97, 123)]) + "\n")
    BertTokenizer(str(bert_dir / "vocab.txt")).save_pretrained(bert_dir)
    torch.manual_seed(0)
    bert_config = BertConfig(
        vocab_size=len(vocab) + 26,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(bert_config).save_pretrained(bert_dir)
    (root / "gdino_tiny.py").write_text(TINY_GROUNDING_DINO)
    detector = build_grounding_dino(root / "gdino_tiny.py", bert_dir)
    torch.save({"model": detector.state_dict()}, root / "gdino_tiny.pth")
    torch.save(_build_tiny_sam().state_dict(), root / "sam_tiny.pth")
    return {
        "grounding_dino_config": str(root / "gdino_tiny.py"),
        "grounding_dino_checkpoint": str(root / "gdino_tiny.pth"),
        "sam_checkpoint": str(root / "sam_tiny.pth"),
        "text_encoder_dir": str(bert_dir),
    }


@pytest.fixture
def tiny_sam_type(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register the tiny SAM builder in segment_anything's registry, the extension point real types live in."""
    from segment_anything import sam_model_registry

    monkeypatch.setitem(sam_model_registry, "tiny_test", _build_tiny_sam)
    return "tiny_test"


def _grounded_config(paths: dict[str, str], sam_type: str, **overrides) -> MasksConfig:
    fields = {"detection_size": 64, "box_threshold": 0.0, "text_threshold": 0.0, **paths, **overrides}
    return MasksConfig(backend="grounded-sam", sam_model_type=sam_type, **fields)


def test_grounded_sam_runs_text_boxes_sam_on_tiny_models(tiny_grounded_sam, tiny_sam_type, subject_dir, tmp_path):
    from eqdiff.prep.grounded_sam import load_grounded_sam

    config = _grounded_config(tiny_grounded_sam, tiny_sam_type)
    models = load_grounded_sam(config)
    saved = torch.load(tiny_grounded_sam["sam_checkpoint"], weights_only=True)
    for name, tensor in models.predictor.model.state_dict().items():
        assert torch.equal(tensor.cpu(), saved[name]), name  # the checkpoint really loaded
    subject = discover_subject(subject_dir, "toy")
    out = compute_masks(subject, tmp_path / "masks", config)
    record = json.loads((out / "masks.json").read_text())
    for photo in subject.photos:
        width, height = Image.open(photo).size
        assert _mask(out / photo.name).shape == (height, width)
        entry = record["photos"][photo.stem]
        x0, y0, x1, y1 = entry["box_xyxy"]
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
        assert entry["backend"] == "grounded-sam" and 0.0 <= entry["box_score"] <= 1.0


def test_grounded_sam_with_no_box_above_threshold_names_the_photo(
    tiny_grounded_sam, tiny_sam_type, subject_dir, tmp_path
):
    config = _grounded_config(tiny_grounded_sam, tiny_sam_type, box_threshold=0.999999)
    with pytest.raises(DataError, match=r"00\.png: GroundingDINO found no 'toy' box"):
        compute_masks(discover_subject(subject_dir, "toy"), tmp_path / "masks", config)
    assert not (tmp_path / "masks").exists()


@pytest.mark.parametrize(
    "field", ["grounding_dino_config", "grounding_dino_checkpoint", "sam_checkpoint", "text_encoder_dir"]
)
def test_grounded_sam_missing_file_is_named(field, tiny_grounded_sam, tiny_sam_type, subject_dir, tmp_path):
    missing = tmp_path / "nowhere" / "model.bin"
    config = _grounded_config(tiny_grounded_sam, tiny_sam_type, **{field: str(missing)})
    with pytest.raises(EqDiffError, match=rf"^{re.escape(str(missing))}: .* not found$"):
        compute_masks(discover_subject(subject_dir, "toy"), tmp_path / "masks", config)


def test_grounded_sam_refuses_foreign_checkpoints(tiny_grounded_sam, tiny_sam_type, subject_dir, tmp_path):
    subject = discover_subject(subject_dir, "toy")
    swapped = _grounded_config(
        tiny_grounded_sam, tiny_sam_type, sam_checkpoint=tiny_grounded_sam["grounding_dino_checkpoint"]
    )
    with pytest.raises(EqDiffError, match="does not match the SAM tiny_test architecture"):
        compute_masks(subject, tmp_path / "masks", swapped)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": {"weight": torch.zeros(1)}, "args": Path("x")}, pickled)
    config = _grounded_config(tiny_grounded_sam, tiny_sam_type, grounding_dino_checkpoint=str(pickled))
    with pytest.raises(EqDiffError, match="not a weights-only GroundingDINO checkpoint"):
        compute_masks(subject, tmp_path / "masks", config)
