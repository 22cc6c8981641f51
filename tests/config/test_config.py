"""Params sections: unknown keys, types, cross-field checks and the ablation variants."""

from __future__ import annotations

from pathlib import Path

import pytest

from eqdiff.config import VARIANTS, ConfigError, MethodConfig, apply_overrides, load_params, parse_override
from eqdiff.config.method import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fdte": {"colour_mode": "grey"}}, "fdte.colour_mode: unknown key"),
        ({"train": {"steps": "many"}}, "train.steps: expected an integer"),
        ({"train": {"steps": -1}}, "train.steps: expected an integer > 0"),
        ({"fdte": {"p_l": 0.5}}, "fdte.p_l: expected p_l \\+ p_h \\+ p_o = 1"),
        ({"fdte": {"cutoff_low": 300}}, "fdte.cutoff_low: expected a cutoff in \\(0, 256\\]"),
        ({"fdte": {"shape": "triangle"}}, "fdte.shape: expected one of box \\| circle"),
        ({"train": {"variant": "G"}}, "train.variant"),
        ({"train": {"learning_rate": True}}, "train.learning_rate: expected a finite number"),
        ({"model": {"preset": "sd-v1"}}, "model.path"),
        ({"train": "fast"}, "train: expected a mapping"),
    ],
)
def test_bad_params_name_the_field(params, message):
    with pytest.raises(ConfigError, match=message):
        MethodConfig.from_dict(params)


def test_defaults_are_the_official_recipe_with_fixes():
    config = MethodConfig.from_dict({})
    # Provenance: docs/method.md, FDTE, Losses and optimisation / docs/official-code.md §0.
    assert (config.fdte.p_l, config.fdte.p_h, config.fdte.p_o) == (0.1, 0.1, 0.8)
    assert (config.fdte.cutoff_low, config.fdte.cutoff_high) == (50.0, 5.0)
    assert config.train.learning_rate == 4e-5 and config.train.steps == 600 and config.train.seed == 42
    assert config.mgdp.dilate_radius == 10 and config.rra.time_gap == 2
    assert config.generate.guidance_scale == 12.5 and config.generate.num_inference_steps == 50


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_resolves(variant):
    resolved = MethodConfig.from_dict({"train": {"variant": variant}}).resolved()
    assert resolved.train.variant == variant


def test_variant_ladder_matches_the_ablation():
    get = {v: MethodConfig.from_dict({"train": {"variant": v}}).resolved() for v in VARIANTS}
    assert not get["A"].rra.enabled and get["B"].rra.enabled
    assert get["B"].losses.reference_attention == 0 and get["C"].losses.reference_attention == 0.1
    assert not get["C"].fdte.enabled and get["D"].fdte.enabled
    assert [get[v].mgdp.mode for v in "DEF"] == ["off", "masked_loss", "mgdp"]
    # Beside the ladder: each differs from its anchor (A or F) in exactly one component's settings.
    differs = {
        ("A_MGDP", "A"): {"mgdp.mode"},
        ("F_noFDTE", "F"): {"fdte.enabled"},
        ("F_noRRA", "F"): {"rra.enabled", "losses.reference_attention", "losses.cross_attention"},
    }
    for (variant, anchor), keys in differs.items():
        flat = {v: {f"{s}.{k}": x for s, d in get[v].to_dict().items() for k, x in d.items() if k != "variant"}
                for v in (variant, anchor)}  # fmt: skip
        assert {k for k in flat[anchor] if flat[anchor][k] != flat[variant][k]} == keys, variant


def test_overrides_and_yaml_round_trip(tmp_path):
    key, value = parse_override("fdte.p_l=0.2")
    assert (key, value) == ("fdte.p_l", 0.2)
    config = apply_overrides(MethodConfig(), {"fdte.p_l": 0.2, "fdte.p_o": 0.7})
    assert config.fdte.p_l == 0.2
    with pytest.raises(ConfigError, match="fdte.nope: unknown parameter"):
        apply_overrides(MethodConfig(), {"fdte.nope": 1})
    path = tmp_path / "params.yaml"
    path.write_text("fdte: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_exponent_floats_without_a_dot_are_numbers_as_dvc_reads_them(tmp_path):
    """``1e-4`` is how learning rates are written; YAML 1.1 (PyYAML) reads it as a string, YAML 1.2 (DVC's
    ruamel.yaml) as a number. A params file, ``-S`` and a sweep axis read it as DVC does."""
    from eqdiff.cli import main
    from eqdiff.config import Params, yaml_value
    from flows.sweep import parse_axes

    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("learning_rate: 1.0e-03", "learning_rate: 1e-4"))
    assert "learning_rate: 1e-4" in params.read_text()
    loaded = Params.load(params, ["train.max_grad_norm=5E-1", "losses.cross_attention=-2e-2"])
    assert loaded.section(TrainConfig).learning_rate == 1e-4
    assert loaded.section(TrainConfig).max_grad_norm == 0.5
    assert parse_axes(["train.learning_rate=1e-4,3e-3,0.01"], "-g") == {"train.learning_rate": [1e-4, 3e-3, 0.01]}
    assert [yaml_value(v) for v in ("10", "1e", "1.2.3", "abc")] == [10, "1e", "1.2.3", "abc"]
    with pytest.raises(ConfigError, match=r"^-g 'fdte.p_l=\[1': the value '\[1' is not valid YAML$"):
        parse_axes(["fdte.p_l=[1"], "-g")
    # the CLI door: a stage reads the hand-written value (check-models refuses nothing here, writes one file)
    argv = ["check-models", "--params", str(params), "-S", "train.learning_rate=3e-3", "--out", str(tmp_path / "c")]
    assert main(argv) == 0
