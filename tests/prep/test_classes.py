"""Class nouns are any text: one slug function names paths and stage names for every door, commands get the
slug and read the noun from params, and DreamBooth's whole roster (its own class nouns, "stuffed animal"
included) plans through ``dvc repro`` with every command intact."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from support.data import DREAMBOOTH, requires_dreambooth
from support.pipeline_copy import BIN, TINY, dvc, make_project_copy, project_env

from eqdiff.config import ConfigError
from eqdiff.io.run_layout import RunLayout
from eqdiff.prep.classes import class_slug
from eqdiff.stages.arguments import class_noun, read_classes
from tasks.spec import read_subjects


def test_slug_is_lower_case_ascii_joined_by_dashes():
    assert class_slug("stuffed animal") == "stuffed-animal"
    assert class_slug("  Stuffed   Animal! ") == "stuffed-animal"
    assert class_slug("café table") == "cafe-table"
    assert class_slug("rc_car") == "rc-car"
    # no ASCII letter at all: a stable hash name, never an empty path component
    assert class_slug("玩具") == class_slug("玩具") != class_slug("狗")
    assert class_slug("玩具").startswith("class-") and len(class_slug("玩具")) == len("class-") + 8


def test_classes_are_keyed_by_their_slug_and_subjects_refer_to_them():
    params = {
        "classes": {"stuffed-animal": "stuffed animal"},
        "subjects": [{"name": "bear_plushie", "dir": "photos/bear", "class": "stuffed-animal"}],
    }
    [subject] = read_subjects(params)
    assert (subject.class_noun, subject.class_slug) == ("stuffed animal", "stuffed-animal")
    # the Prefect door names the prior folder as dvc.yaml's prior@<slug> does
    assert RunLayout(Path("runs")).prior(subject.class_noun) == Path("runs/prior/stuffed-animal")
    assert class_noun(params, "stuffed-animal") == "stuffed animal"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"classes": {"stuffed animal": "stuffed animal"}},
            "classes.stuffed animal: expected the key 'stuffed-animal'",
        ),
        ({"classes": ["toy"]}, "classes: expected a mapping of slug -> class noun"),
        ({"classes": {"toy": ""}}, "classes.toy: expected a class noun"),
    ],
)
def test_bad_classes_fail_in_one_line(params: dict, message: str):
    with pytest.raises(ConfigError, match="^" + message):
        read_classes(params)


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        ({"name": "bear", "dir": "d", "class_noun": "stuffed animal"}, r"write class: stuffed-animal and classes"),
        ({"name": "bear", "dir": "d", "class": "dog"}, r"subjects\[0\]\.class: expected a key of classes"),
        ({"name": "my bear", "dir": "d", "class": "toy"}, r"subjects\[0\]\.name: expected a folder name of"),
        ({"name": "bear", "dir": "my photos/bear", "class": "toy"}, r"subjects\[0\]\.dir: expected a path of"),
    ],
)
def test_bad_subjects_fail_in_one_line(subject: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        read_subjects({"classes": {"toy": "toy", "stuffed-animal": "stuffed animal"}, "subjects": [subject]})


@pytest.mark.slow
def test_cli_reads_the_noun_of_a_class_slug_from_params(tmp_path: Path):
    params = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
    params["classes"] = {"stuffed-animal": "stuffed animal"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    command = [str(BIN / "eqdiff"), "prior", "--class", "teddy", "--out", "out"]
    result = subprocess.run(command, cwd=tmp_path, env=project_env(tmp_path), capture_output=True, text=True)
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr.strip().splitlines() == [
        "eqdiff prior: error: --class teddy: not a key of params classes ['stuffed-animal']"
    ]


def dreambooth_roster() -> list[tuple[str, str]]:
    """(subject, class noun) of every subject folder present, from the data set's prompts_and_classes.txt."""
    lines = (DREAMBOOTH / "prompts_and_classes.txt").read_text().splitlines()
    start = lines.index("subject_name,class") + 1
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        name, noun = line.split(",")
        if (DREAMBOOTH / name).is_dir():
            rows.append((name, noun))
    return rows


@requires_dreambooth
@pytest.mark.slow
def test_dreambooth_roster_plans_every_stage_with_its_class_nouns(tmp_path: Path):
    roster = dreambooth_roster()
    assert len(roster) == 25 and ("bear_plushie", "stuffed animal") in roster
    subjects = [{"name": n, "dir": str(DREAMBOOTH / n), "class": class_slug(c)} for n, c in roster]
    classes = {class_slug(c): c for _, c in roster}
    overrides = {**TINY, "variants": ["F"], "subjects": subjects, "classes": classes}
    project = make_project_copy(tmp_path / "project", overrides)
    names = dvc(project, "stage", "list", "--name-only").stdout.split()
    assert {f"prior@{slug}" for slug in classes} <= set(names) and "prior@stuffed-animal" in names
    assert len([n for n in names if n.startswith("train@")]) == 25
    # --force: plain `--dry` trips over DVC's run-cache lookup of not-yet-built deps (treeverse/dvc#9818)
    output = dvc(project, "repro", "--dry", "--force").stdout
    commands = [shlex.split(line[2:]) for line in output.splitlines() if line.startswith("> ")]
    assert len(commands) == len(names)
    for argv in commands:
        if "--class" in argv:
            slug = argv[argv.index("--class") + 1]
            assert slug in classes, argv  # one whole argument, a key the command resolves in params
        if argv[:2] == ["eqdiff", "prior"]:
            slug = argv[argv.index("--class") + 1]
            assert argv[argv.index("--out") + 1] == f"runs/prior/{slug}"
            assert argv[argv.index("--work-dir") + 1] == f"runs/prior-work/{slug}"
    bear = next(a for a in commands if a[:2] == ["eqdiff", "train"] and "runs/bear_plushie/F/concept" in a)
    assert bear[bear.index("--prior") + 1] == "runs/prior/stuffed-animal"
