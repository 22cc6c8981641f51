"""The reliability rules at the function level, where a door other than the CLI reaches them (Prefect tasks,
the tracking stage, Python callers): output claims, names, params strictness, OS-error lines, loss logs."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from eqdiff.config import ConfigError, load_params, parse_override
from eqdiff.errors import EqDiffError, os_error_message
from eqdiff.io.manifests import check_cache_inputs
from eqdiff.io.output_safety import OutputError, check_name, claim_output, inside


def test_params_prompt_set_keys_cannot_leave_the_samples_folder(tmp_path):
    """The params ``prompts:`` keys reach ``generate_samples`` directly (Prefect door): refused before any write."""
    from eqdiff.stages.generate import run as generate_samples

    prompts = tmp_path / "p.txt"
    prompts.write_text("a {}\n")
    for name in ("../../escaped", "/abs", "a/b", "..", ".hidden", "x" * 65):
        with pytest.raises(OutputError, match="prompt set"):
            generate_samples(tmp_path / "concept", tmp_path / "out", {}, {name: prompts})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]


def test_names_and_listed_files_stay_inside(tmp_path):
    assert check_name("stylized_2", "set") == "stylized_2"
    assert inside(tmp_path, "a/b.png", "index.json") == tmp_path / "a" / "b.png"
    (tmp_path / "link").symlink_to("/etc")
    for bad in ("../x.png", "/etc/passwd", "a/../../x", "link/passwd", "", 3):
        with pytest.raises(OutputError):
            inside(tmp_path, bad, "index.json")


def test_claim_output_rules(tmp_path):
    subject = tmp_path / "subject"
    (subject / "masks").mkdir(parents=True)
    (subject / "a.png").write_bytes(b"x")
    (subject / "masks" / "a.png").write_bytes(b"user's own mask")
    with pytest.raises(OutputError, match="is an input"):
        claim_output(subject, "masks", manifest="masks.json", folders=[subject])
    with pytest.raises(OutputError, match="contains an input"):
        claim_output(tmp_path, "masks", manifest="masks.json", folders=[subject])
    with pytest.raises(OutputError, match="lies inside an input"):
        claim_output(subject / "masks" / "x", "augment", manifest="augment.json", reads=[subject / "masks"])
    with pytest.raises(OutputError, match="not an earlier output"):
        claim_output(subject / "masks", "masks", manifest="masks.json", folders=[tmp_path / "other"])
    claim_output(subject / "new", "masks", manifest="masks.json", folders=[subject])  # inside a top-level folder
    (subject / "masks" / "masks.json").write_text("{}")
    claim_output(subject / "masks", "masks", manifest="masks.json", folders=[tmp_path / "other"])  # its own
    with pytest.raises(OutputError, match="is a file"):
        claim_output(subject / "a.png" / "out", "masks", manifest="masks.json")
    (tmp_path / "notes.json").write_text("[1]")
    with pytest.raises(OutputError, match="not an earlier output"):
        claim_output(tmp_path / "notes.json", "evaluate", file_check=lambda d: "calibrated" in d)


def test_params_unknown_sections_and_duplicate_keys_are_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  steps: 1\naugmnt:\n  seed: 1\n")
    with pytest.raises(ConfigError, match="unknown params section 'augmnt'"):
        load_params(path)
    path.write_text("masks:\n  backend: files\n  files_dir: a\n  files_dir: b\n")
    with pytest.raises(ConfigError, match=r"params.yaml:4: duplicate key 'files_dir'"):
        load_params(path)
    path.write_text("subjects: [{name: a, dir: b, name: c}]\n")
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        load_params(path)
    with pytest.raises(ConfigError, match="unknown params section 'tran'"):
        parse_override("tran.steps=3")
    assert parse_override("train.steps=3") == ("train.steps", 3)


def test_os_error_message_names_the_path_and_the_remedy():
    cases = {
        errno.EACCES: "permission denied",
        errno.ENOSPC: "no space left",
        errno.EROFS: "read-only",
        errno.EISDIR: "is a folder",
        errno.ENOTDIR: "is a file, not a folder",
        errno.EEXIST: "already exists",
    }
    for code, text in cases.items():
        message = os_error_message(OSError(code, "x", "/data/out"))
        assert message.startswith("/data/out: ") and text in message and "\n" not in message
    assert "EIO" in os_error_message(OSError(errno.EIO, "Input/output error", "/d"))


def test_tracking_names_a_half_written_loss_line(tmp_path):
    from tasks.tracking import read_losses

    log = tmp_path / "losses.jsonl"
    log.write_text('{"step": 1, "loss/total": 0.5}\n{"step": 2, "loss/to')
    with pytest.raises(EqDiffError, match=r"losses.jsonl:2: not a loss record"):
        read_losses(log)
    log.write_text('{"step": 1, "loss/total": 0.5}\n')
    assert read_losses(log) == [(1, None, {"loss/total": 0.5})]


def test_cache_of_a_photo_no_longer_there_is_refused(tmp_path):
    from eqdiff.io.artifacts import write_json
    from eqdiff.io.manifests import subject_inputs
    from eqdiff.io.schemas.stage_manifests import AugmentManifest
    from eqdiff.prep.sample import make_sample_subject
    from eqdiff.prep.subjects import discover_subject

    subject_dir = make_sample_subject(tmp_path / "toy", num_photos=3)
    subject = discover_subject(subject_dir, "toy")
    cache = tmp_path / "augment"
    key = {"inputs": subject_inputs(subject, subject_dir / "masks")}
    write_json(cache / AugmentManifest.FILE, AugmentManifest(key, {}).to_json())
    check_cache_inputs(cache, AugmentManifest, subject, subject_dir / "masks")
    Path(subject_dir / "02.png").unlink()
    with pytest.raises(EqDiffError, match=r"a photo no longer in .* \(02\)"):
        check_cache_inputs(cache, AugmentManifest, discover_subject(subject_dir, "toy"), subject_dir / "masks")


def test_an_unreadable_photo_is_one_line_naming_it(tmp_path, monkeypatch):
    """Permission denied on a photo: ``chmod 000`` where that binds (not root); as root, whom modes do not stop,
    ``open`` itself raises what the kernel would (the OS boundary is the only thing replaced)."""
    import builtins
    import contextlib
    import io
    import os

    from eqdiff import cli
    from robustness.harness import make_subject, masks_run

    subject = make_subject(tmp_path)
    photo = subject / "01.png"
    if os.geteuid() != 0:
        photo.chmod(0)
    else:
        real_open = builtins.open

        def denying_open(file, *args, **kwargs):
            if Path(file) == photo:
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", denying_open)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = cli.main(["masks", *masks_run(subject, tmp_path / "out")])
    photo.chmod(0o644)
    assert code == 2 and not (tmp_path / "out").exists()
    assert (
        stderr.getvalue()
        == f"eqdiff masks: error: {photo}: permission denied; fix its permissions or choose another path\n"
    )
