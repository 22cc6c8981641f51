"""Corpus cases of values that pass a type check but break downstream code: DDIM steps beyond the scheduler,
sizes that scale memory, seeds outside what generators accept, devices this machine does not have.
"""

from __future__ import annotations

from pathlib import Path

from robustness.corpus_artifacts import Builder
from robustness.harness import Case, Env, Invocation, generate_run, masks_run, train_run


def stage_argv(stage: str, env: Env, root: Path) -> list[str]:
    """Ordinary arguments of ``stage`` on the shared inputs, with its output under ``root``."""
    subject, out = env.subject, root / "out"
    if stage == "masks":
        return masks_run(subject, out)
    if stage in ("augment", "bands"):
        return ["--subject-dir", str(subject), "--masks", str(subject / "masks"), "--out", str(out)]
    if stage == "prior":
        return ["--class-noun", "toy", "--out", str(out)]
    if stage == "generate":
        return generate_run(env.concept, out, env.prompts)
    if stage == "evaluate":
        return ["--samples", str(env.samples), "--subject-dir", str(subject), "--out", str(root / "out")]
    return train_run(subject, out)


def override(stage: str, *overrides: str) -> Builder:
    """``stage`` with ``-S`` overrides that must be refused before anything is written."""

    def build(env: Env, root: Path) -> Invocation:
        extra = [a for o in overrides for a in ("-S", o)]
        return Invocation([*stage_argv(stage, env, root), *extra], absent=[root / "out"])

    return build


def with_args(stage: str, *args: str) -> Builder:
    """``stage`` with extra command-line arguments that must be refused before anything is written."""

    def build(env: Env, root: Path) -> Invocation:
        argv = ["--out", str(root / "out"), *args] if stage == "sample" else [*stage_argv(stage, env, root), *args]
        return Invocation(argv, absent=[root / "out"])

    return build


def many_prompts(env: Env, root: Path) -> Invocation:
    """100000 prompts in one set: more than the per-set seed index can tell apart."""
    path = root / "prompts.txt"
    path.write_text("a {} here\n" * 100_000, encoding="utf-8")
    return Invocation(generate_run(env.concept, root / "out", path), absent=[root / "out"])


G_LIMITS = "limits"

CASES: list[Case] = [
    Case(
        "limits: DDIM steps above 1000",
        G_LIMITS,
        "generate",
        override("generate", "generate.num_inference_steps=1001"),
        "generate.num_inference_steps",
    ),
    Case(
        "limits: prior DDIM steps above 1000",
        G_LIMITS,
        "prior",
        override("prior", "prior.num_inference_steps=5000"),
        "prior.num_inference_steps",
    ),
    Case("limits: dilation radius 10^6", G_LIMITS, "train", override("train", "mgdp.dilate_radius=1000000"), "mgdp"),
    Case("limits: resolution 100000", G_LIMITS, "bands", override("bands", "train.resolution=100000"), "resolution"),
    Case(
        "limits: generate batch 10^5", G_LIMITS, "generate", override("generate", "generate.batch_size=100000"), "batch"
    ),
    Case(
        "limits: 20000 class images", G_LIMITS, "prior", override("prior", "train.num_class_images=20000"), "num_class"
    ),
    Case(
        "limits: 5000 images per prompt",
        G_LIMITS,
        "generate",
        override("generate", "generate.num_images_per_prompt=5000"),
        "num_images_per_prompt",
    ),
    Case("limits: negative seed", G_LIMITS, "train", override("train", "train.seed=-1"), "train.seed"),
    Case("limits: seed above 2^32", G_LIMITS, "generate", override("generate", "generate.seed=1099511627776"), "seed"),
    Case(
        "limits: 10^5 views per photo",
        G_LIMITS,
        "augment",
        override("augment", "augment.views_per_photo=100000"),
        "views",
    ),
    Case("limits: RRA time gap 1000", G_LIMITS, "train", override("train", "rra.time_gap=1000"), "rra.time_gap"),
    Case(
        "limits: detection size 10^5", G_LIMITS, "masks", override("masks", "masks.detection_size=100000"), "detection"
    ),
    Case(
        "limits: evaluate batch 10^6",
        G_LIMITS,
        "evaluate",
        override("evaluate", "evaluate.batch_size=1000000"),
        "batch",
    ),
    Case("limits: --device foo", G_LIMITS, "train", with_args("train", "--device", "foo"), "--device foo"),
    Case("limits: --device mps", G_LIMITS, "generate", with_args("generate", "--device", "mps"), "--device mps"),
    Case("limits: sample --seed -1", G_LIMITS, "sample", with_args("sample", "--seed", "-1"), "--seed"),
    Case(
        "limits: sample 10^6 photos", G_LIMITS, "sample", with_args("sample", "--num-photos", "1000000"), "--num-photos"
    ),
    Case(
        "limits: guidance scale 1000",
        G_LIMITS,
        "generate",
        override("generate", "generate.guidance_scale=1000"),
        "generate.guidance_scale",
    ),
    Case("limits: 100000 prompts in a set", G_LIMITS, "generate", many_prompts, "100000 prompts"),
    Case("limits: model seed 2^40", G_LIMITS, "prior", override("prior", "model.seed=1099511627776"), "model.seed"),
]
"""Limit cases, in table order."""
