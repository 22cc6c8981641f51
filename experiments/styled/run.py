"""Styled subject sets, a first measurement: does A (Custom Diffusion) draw its photos' style into prompts that ask
for another, and does F (the full method) not? (docs/world.md, "A first measurement: five held-out identities,
three training seeds").

Every held-out identity but the ball (the ball was used to choose the settings, which are the world experiment's,
experiments/world/params.yaml, frozen before this ran) gets 5 photos in one style (--style, in the cluttered
room), then variants A and F are trained with each of --seeds training seeds, sampled on the world prompt lists
and evaluated with the world evaluators. Every stage is the project's own command (``eqdiff.cli.main`` with the
command line a user would type), run in --jobs worker processes so the libraries are imported once per worker.

    .venv/bin/python experiments/styled/run.py --out experiments/styled/runs          # 19 min on 2 cores
    .venv/bin/python experiments/styled/run.py --out experiments/styled/runs --style pencil   # a high-frequency style
    .venv/bin/python experiments/styled/run.py --out experiments/styled/runs --variants A C D F   # the ladder
    .venv/bin/python experiments/styled/run.py --out experiments/styled/runs --tag loo \
        --variants A F A_MGDP D F_noFDTE F_noRRA F@grey     # leave-one-out, masking alone, the grey reference
    .venv/bin/python experiments/styled/run.py --out experiments/styled/runs --steps 125 --tag steps125   # sensitivity
    .venv/bin/python experiments/styled/run.py --out experiments/styled/runs --summarise      # the summary again

The summary (summary-STYLE.md, summary-STYLE.json) gives, per variant and prompt set, each world metric with its 95 %
bootstrap interval clustered as the data are (identities, then training seeds, then images;
``eqdiff.evaluation.intervals``), the paired difference F - A with its interval, and each identity's leaks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "experiments" / "world" / "params.yaml"
PROMPTS = REPO / "eqdiff" / "prompt_lists"
IDENTITIES = ("box", "star", "heart", "pyramid", "ring")  # the held-out world subjects but the ball
METRICS = ("style_leak", "scene_leak", "world_text", "world_identity")


def _cli(argv: list[str]) -> None:
    from eqdiff import cli

    status = cli.main(argv)
    if status != 0:
        raise RuntimeError(f"eqdiff {' '.join(argv)} exited {status}")


def _common() -> list[str]:
    return ["--params", str(PARAMS)]


def prepare(out: Path, identity: str, style: str) -> None:
    """Photos, masks, augmented views and bands of one styled subject set; the class images of its class."""
    subject = out / "subjects" / f"{identity}-{style}"
    root = out / f"{identity}-{style}"
    if not subject.is_dir():
        _cli(["sample", "--out", str(subject), "--world", identity, "--num-photos", "5", "--seed", "0",
              "--photo-style", style])  # fmt: skip
    for stage, extra in (
        ("masks", ["--class", identity]),
        ("augment", ["--masks", str(root / "masks")]),
        ("bands", ["--masks", str(root / "masks")]),
    ):
        if not (root / stage).is_dir():
            _cli([stage, *_common(), "--subject-dir", str(subject), *extra, "--out", str(root / stage)])
    if not (out / "prior" / identity).is_dir():
        _cli(["prior", *_common(), "--class", identity, "--out", str(out / "prior" / identity),
              "--work-dir", str(out / "prior-work" / identity)])  # fmt: skip


# An arm that reuses a variant's concepts and only samples differently: "F@grey" is F generated with the reference
# photo's background replaced by grey (docs/method.md, Inference), against F's reference as photographed.
ARMS = {"grey": ["-S", "generate.reference_background=grey"]}

# Paired contrasts beyond "every variant against A", each (later, earlier) where both ran: the ladder's rungs, the
# leave-one-out variants against F (what removing one component from the full method does), the reference arm.
CONTRASTS = (
    ("B", "A"), ("C", "B"), ("D", "C"), ("E", "D"), ("F", "D"),
    ("F", "F_noFDTE"), ("F", "F_noRRA"), ("F@grey", "F"),
)  # fmt: skip


def run_dir(out: Path, identity: str, style: str, variant: str, seed: int, steps: int | None = None) -> Path:
    """One (identity, style, variant, training seed)'s folder; runs at another number of training steps than the
    params' (the sensitivity check) in a ``steps<N>`` folder of their own, beside the shared photos and bands."""
    root = out / f"{identity}-{style}"
    return (root / f"steps{steps}" if steps else root) / f"{variant}-seed{seed}"


def concept(out: Path, identity: str, style: str, variant: str, seed: int, steps: int | None = None) -> str:
    """Train, sample and evaluate one (identity, style, variant, training seed); skips what is already done. A
    variant ``V@ARM`` samples V's concept with the arm's overrides (``ARMS``) and trains nothing; ``steps``
    overrides ``train.steps``."""
    subject = out / "subjects" / f"{identity}-{style}"
    root = out / f"{identity}-{style}"
    run = run_dir(out, identity, style, variant, seed, steps)
    trained, _, arm = variant.partition("@")
    weights = run_dir(out, identity, style, trained, seed, steps) / "concept"
    if not arm and not (weights / "concept.json").is_file():
        _cli(["train", *_common(), "-S", f"train.variant={variant}", "-S", f"train.seed={seed}",
              *(["-S", f"train.steps={steps}"] if steps else []),
              "--subject-dir", str(subject), "--class", identity, "--masks", str(root / "masks"),
              "--augment", str(root / "augment"), "--bands", str(root / "bands"),
              "--prior", str(out / "prior" / identity),
              "--out", str(weights), "--work-dir", str(run / "concept-work")])  # fmt: skip
    if not (run / "samples" / "index.json").is_file():
        _cli(["generate", *_common(), *ARMS.get(arm, []), "--concept", str(weights),
              "--prompts", f"unstylized={PROMPTS / 'world_unstylized.txt'}",
              "--prompts", f"stylized={PROMPTS / 'world_stylized.txt'}", "--out", str(run / "samples")])  # fmt: skip
    if not (run / "evaluation.json").is_file():
        _cli(["evaluate", *_common(), "--samples", str(run / "samples"), "--subject-dir", str(subject),
              "--out", str(run / "metrics.json"), "--info", str(run / "evaluation.json")])  # fmt: skip
    return str(run)


def _values(run: Path) -> dict[str, dict[str, dict[str, float]]]:
    """prompt set -> metric -> image file -> value, from a run's evaluation.json."""
    record = json.loads((run / "evaluation.json").read_text())
    found: dict[str, dict[str, dict[str, float]]] = {}
    for image in record["world_evaluator"]["images"]:
        for metric, value in image.get("values", {}).items():
            found.setdefault(image["prompt_set"], {}).setdefault(metric, {})[image["file"]] = value
    return found


def summarise(
    out: Path, style: str, seeds: list[int], variants: list[str], tag: str = "", steps: int | None = None
) -> str:
    from eqdiff.evaluation.intervals import bootstrap, holm, paired_difference

    data: dict = {}  # variant -> set -> metric -> identity -> [per-seed {file: value}]
    for identity in IDENTITIES:
        for variant in variants:
            for seed in seeds:
                for prompt_set, metrics in _values(run_dir(out, identity, style, variant, seed, steps)).items():
                    for metric, values in metrics.items():
                        runs = data.setdefault(variant, {}).setdefault(prompt_set, {}).setdefault(metric, {})
                        runs.setdefault(identity, []).append(values)
    lines = [
        f"Photos in {style}; identities {', '.join(IDENTITIES)}; training seeds {seeds}"
        + (f"; {steps} training steps" if steps else "")
        + "; 95 % intervals resample",
        "identities, then seeds, then images.",
        "",
        "| variant | prompt set | " + " | ".join(METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    record: dict = {"style": style, "seeds": seeds, "identities": IDENTITIES, "steps": steps, "variants": {}}
    record["differences"] = {}
    for variant in variants:
        for prompt_set in ("unstylized", "stylized"):
            cells = []
            for metric in METRICS:
                found = bootstrap(data[variant].get(prompt_set, {}).get(metric, {}))
                record["variants"].setdefault(variant, {}).setdefault(prompt_set, {})[metric] = (
                    found.to_json() if found else None
                )
                cells.append("—" if found is None else f"{found.value:.2f} [{found.low:.2f}, {found.high:.2f}]")
            lines.append(f"| {variant} | {prompt_set} | " + " | ".join(cells) + " |")
    # Paired differences: every variant against A (Holm across them, per prompt set and metric), then the
    # CONTRASTS that ran (what each component adds on the ladder, or takes away from F).
    pairs = [(v, variants[0]) for v in variants[1:]]
    pairs += [(b, a) for b, a in CONTRASTS if {a, b} <= set(variants) and (b, a) not in pairs]
    lines += ["", "| difference | prompt set | metric | value | 95 % interval | p | p (Holm) |"]
    lines.append("|---|---|---|---:|---|---:|---:|")
    for prompt_set in ("unstylized", "stylized"):
        for metric in METRICS:
            found = {}
            values = {v: data[v].get(prompt_set, {}).get(metric, {}) for v in variants}
            for high, low in pairs:
                if (difference := paired_difference(values[high], values[low])) is not None:
                    found[f"{high} − {low}"] = difference
            against_a = [name for name in found if name.endswith(f"− {variants[0]}")]
            adjusted = dict(zip(against_a, holm([found[name].p for name in against_a]), strict=True))
            for name, d in found.items():
                record["differences"].setdefault(name, {}).setdefault(prompt_set, {})[metric] = {
                    **d.to_json(),
                    "p_holm": adjusted.get(name),
                }
                zero = " (includes 0)" if d.low <= 0 <= d.high else ""
                holm_p = f"{adjusted[name]:.3f}" if name in adjusted else "—"
                lines.append(
                    f"| {name} | {prompt_set} | {metric} | {d.value:+.2f} | "
                    f"[{d.low:+.2f}, {d.high:+.2f}]{zero} | {d.p:.3f} | {holm_p} |"
                )
    lines += ["", "Per identity (mean over seeds), unstylized style leak / scene leak:", ""]
    lines += ["| identity | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for identity in IDENTITIES:
        cells = []
        for variant in variants:
            leaks = []
            for metric in ("style_leak", "scene_leak"):
                runs = data[variant].get("unstylized", {}).get(metric, {}).get(identity, [])
                means = [sum(run.values()) / len(run) for run in runs if run]
                leaks.append(f"{sum(means) / len(means):.2f}" if means else "—")
            cells.append(" / ".join(leaks))
        lines.append(f"| {identity} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    name = f"summary-{style}{'-' + tag if tag else ''}"
    (out / f"{name}.md").write_text(text)
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--style", default="watercolor")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variants", nargs="+", default=["A", "F"],
        help="A first; the ladder (A C D F), leave-one-out variants (D F_noFDTE F_noRRA), A_MGDP, arms (F@grey)",
    )  # fmt: skip
    parser.add_argument("--tag", default="", help="summary-STYLE-TAG.md: a summary beside the earlier ones")
    parser.add_argument("--steps", type=int, help="train.steps for a sensitivity check (runs in steps<N>/ folders)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--summarise", action="store_true")
    args = parser.parse_args()
    out = args.out.resolve()
    if args.summarise:
        print(summarise(out, args.style, args.seeds, args.variants, args.tag, args.steps), end="")
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker: the workers fill the cores
    with ProcessPoolExecutor(args.jobs) as pool:
        list(pool.map(prepare, [out] * len(IDENTITIES), IDENTITIES, [args.style] * len(IDENTITIES)))
        # Trained variants first, then the arms that sample their concepts.
        for phase in ([v for v in args.variants if "@" not in v], [v for v in args.variants if "@" in v]):
            jobs = [(out, i, args.style, v, s, args.steps) for s in args.seeds for i in IDENTITIES for v in phase]
            for done in pool.map(concept, *zip(*jobs, strict=True)) if jobs else ():
                print("\ndone", done, flush=True)
    print(summarise(out, args.style, args.seeds, args.variants, args.tag, args.steps), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
