"""Corpus cases of output safety and operating-system errors.

Output safety: every stage pointed at one of its inputs, a folder holding them, a folder it did not write, a path
under a file, or a name that would leave its output. Each must be refused before anything is created, with the
whole case folder (inputs and all) byte-identical afterwards.

Operating-system errors are made real where the machine allows: an immutable folder (``chattr +i``, as root) or a
read-only one (``chmod``, as another user) for permission denied; a tiny ``tmpfs`` (as root) or a file-size
resource limit (``RLIMIT_FSIZE``, EFBIG, anyone) for a full disk. Which mechanism ran is the case's own business:
the expected outcome (exit 2, one line naming the path) is the same.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

from support.evaluations import write_evaluation

from robustness.corpus_artifacts import Builder
from robustness.harness import Case, Env, Invocation, generate_run, make_subject, masks_run, train_run
from robustness.images import photo


# ---------------------------------------------------------------------------------------------- helpers
def _subject_args(subject: Path, out: Path, masks: Path | None = None) -> list[str]:
    masks = masks if masks is not None else subject / "masks"
    return ["--subject-dir", str(subject), "--masks", str(masks), "--out", str(out), "-S", "train.resolution=32"]


def _user_folder(root: Path, name: str = "mine") -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "notes.txt").write_text("my own notes\n", encoding="utf-8")
    photo(seed=5).save(folder / "holiday.png")
    return folder


def _concept_copy(env: Env, root: Path) -> Path:
    return Path(shutil.copytree(env.concept, root / "concept"))


def _runs_folder(root: Path, subject: Path) -> Path:
    """A minimal ``eqdiff report`` input: one subject, one variant, its metrics.json (numbers) and
    evaluation.json (what was measured); samples are not read first."""
    write_evaluation(root / "runs" / "toy" / "F", subject)
    return root / "runs"


def guarded(stage_argv) -> Builder:
    """A refused run whose whole case folder must stay byte-identical: ``stage_argv(env, root) -> argv``."""

    def build(env: Env, root: Path) -> Invocation:
        argv, extra_untouched = stage_argv(env, root)
        return Invocation(argv, untouched=[root, *extra_untouched])

    return build


# --------------------------------------------------------------------------------------- output = input
def masks_out(where: str):
    def argv(env: Env, root: Path):
        subject = make_subject(root)
        out = {
            "subject": subject,
            "parent": root,
            "files_dir": subject / "masks",
            "under_photo": subject / "00.png" / "masks",
            "user": _user_folder(root),
            "file": subject / "00.png",
        }[where]
        return masks_run(subject, out), []

    return argv


def augment_out_masks(env: Env, root: Path):
    subject = make_subject(root)
    return _subject_args(subject, subject / "masks"), []


def bands_out_subject(env: Env, root: Path):
    subject = make_subject(root)
    return _subject_args(subject, subject), []


def prior_out(where: str):
    def argv(env: Env, root: Path):
        real = root / "real"
        real.mkdir()
        for i in range(2):
            photo(seed=i).save(real / f"{i}.png")
        out = real if where == "real" else _user_folder(root)
        args = ["--class-noun", "toy", "--out", str(out), "-S", "train.num_class_images=2"]
        return args + (["-S", f"prior.real_images_dir={real}"] if where == "real" else []), []

    return argv


def train_out(where: str):
    def argv(env: Env, root: Path):
        subject = make_subject(root)
        if where == "subject":
            return train_run(subject, subject), []
        if where == "parent":
            return train_run(subject, root), []
        if where == "work_is_masks":
            return train_run(subject, root / "out", "--work-dir", str(subject / "masks")), []
        return train_run(subject, root / "out", "--work-dir", str(root / "out")), []  # work dir == concept

    return argv


def generate_out(where: str):
    def argv(env: Env, root: Path):
        concept = _concept_copy(env, root)
        prompts = root / "p" / "prompts.txt"
        prompts.parent.mkdir()
        prompts.write_text("a {} on the beach\n", encoding="utf-8")
        out = {"concept": concept, "inside": concept / "samples", "prompts_dir": prompts.parent}[where]
        return generate_run(concept, out, prompts), []

    return argv


def prompt_set_named(name: str) -> Builder:
    """``--prompts NAME=FILE`` where NAME would be a path outside ``--out``: refused, nothing written anywhere."""

    def build(env: Env, root: Path) -> Invocation:
        out = root / "a" / "b" / "out"
        escaped = (out / name).resolve()
        argv = ["--concept", str(env.concept), "--out", str(out), "--prompts", f"{name}={env.prompts}"]
        return Invocation(argv, absent=[out, escaped], untouched=[env.concept])

    return build


def evaluate_out(where: str):
    def argv(env: Env, root: Path):
        samples = Path(shutil.copytree(env.samples, root / "samples"))
        if where == "index":
            out = samples / "index.json"
        elif where == "folder":
            out = root / "m"
            out.mkdir()
            (out / "keep.txt").write_text("keep\n")
        else:
            out = root / "notes.json"
            out.write_text(json.dumps({"my": "notes"}))
        return ["--samples", str(samples), "--subject-dir", str(env.subject), "--out", str(out)], [env.subject]

    return argv


def report_out_runs(env: Env, root: Path):
    runs = _runs_folder(root, make_subject(root))
    return ["--runs", str(runs), "--out", str(runs)], []


def sample_over_photos(env: Env, root: Path):
    folder = root / "mine"
    folder.mkdir()
    photo(seed=9).save(folder / "00.png")
    return ["--out", str(folder), "--num-photos", "2"], []


# ------------------------------------------------------------------------------------ operating system
def _deny_writes(folder: Path):
    """Make ``folder`` refuse new entries; return the undo. Root ignores modes, so it gets ``chattr +i``."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True, capture_output=True)


def permission_denied(env: Env, root: Path) -> Invocation:
    subject = make_subject(root)
    locked = root / "locked"
    locked.mkdir()
    undo = _deny_writes(locked)
    argv = masks_run(subject, locked / "masks")
    return Invocation(argv, absent=[locked / "masks"], untouched=[subject], cleanup=undo)


def _small_disk(mount: Path):
    """A 16 KiB file system at ``mount`` (tmpfs, as root), else a 16 KiB file-size limit for this process."""
    mount.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True)
        if done.returncode == 0:
            return lambda: subprocess.run(["umount", str(mount)], check=True, capture_output=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel's SIGXFSZ ends the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))

    def undo() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)

    return undo


def disk_full(env: Env, root: Path) -> Invocation:
    """A bands cache (a 60 KiB band sheet) written onto a 16 KiB disk: refused, no partial cache left."""
    subject = Path(shutil.copytree(env.subject, root / "toy"))
    out = root / "disk" / "bands"
    undo = _small_disk(root / "disk")
    return Invocation(_subject_args(subject, out), absent=[out], untouched=[subject], cleanup=undo)


def read_only_file_system(env: Env, root: Path) -> Invocation:
    subject = make_subject(root)
    mount = root / "ro"
    mount.mkdir()
    undo = None
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16k", "tmpfs", str(mount)], capture_output=True)
        if done.returncode == 0:
            undo = lambda: subprocess.run(["umount", str(mount)], check=True, capture_output=True)  # noqa: E731
    undo = undo or _deny_writes(mount)
    return Invocation(_subject_args(subject, mount / "augment"), absent=[mount / "augment"], cleanup=undo)


def prompt_file_is_folder(env: Env, root: Path) -> Invocation:
    folder = root / "prompts.txt"
    folder.mkdir()
    return Invocation(generate_run(env.concept, root / "out", folder), absent=[root / "out"])


def prompt_file_is_fifo(env: Env, root: Path) -> Invocation:
    fifo = root / "prompts.txt"
    os.mkfifo(fifo)  # reading it would block forever
    return Invocation(generate_run(env.concept, root / "out", fifo), absent=[root / "out"])


def params_is_folder(env: Env, root: Path) -> Invocation:
    (root / "params.yaml").mkdir()
    argv = ["--params", str(root / "params.yaml"), *masks_run(make_subject(root), root / "out")]
    return Invocation(argv, absent=[root / "out"])


def reference_is_folder(env: Env, root: Path) -> Invocation:
    (root / "ref.png").mkdir()
    argv = generate_run(env.concept, root / "out", env.prompts, "--reference", str(root / "ref.png"))
    return Invocation(argv, absent=[root / "out"])


def concept_is_file(env: Env, root: Path) -> Invocation:
    (root / "concept").write_text("not a folder\n")
    return Invocation(generate_run(root / "concept", root / "out", env.prompts), absent=[root / "out"])


G_OUT, G_OS = "outputs", "operating system"
IS_INPUT, CONTAINS, INSIDE, FOREIGN = (
    "is an input",
    "contains an input",
    "lies inside an input",
    "not an earlier output",
)

CASES: list[Case] = [
    Case("output: masks --out is the subject folder", G_OUT, "masks", guarded(masks_out("subject")), IS_INPUT),
    Case("output: masks --out is the subject's parent", G_OUT, "masks", guarded(masks_out("parent")), CONTAINS),
    Case("output: masks --out is masks.files_dir", G_OUT, "masks", guarded(masks_out("files_dir")), IS_INPUT),
    Case("output: masks --out under a photo file", G_OUT, "masks", guarded(masks_out("under_photo")), "is a file"),
    Case("output: masks --out is a user's folder", G_OUT, "masks", guarded(masks_out("user")), FOREIGN),
    Case("output: masks --out is a photo file", G_OUT, "masks", guarded(masks_out("file")), "is a file"),
    Case("output: augment --out is its masks folder", G_OUT, "augment", guarded(augment_out_masks), IS_INPUT),
    Case("output: bands --out is the subject folder", G_OUT, "bands", guarded(bands_out_subject), IS_INPUT),
    Case("output: prior --out is prior.real_images_dir", G_OUT, "prior", guarded(prior_out("real")), IS_INPUT),
    Case("output: prior --out is a user's folder", G_OUT, "prior", guarded(prior_out("user")), FOREIGN),
    Case("output: train --out is the subject folder", G_OUT, "train", guarded(train_out("subject")), IS_INPUT),
    Case("output: train --out holds the subject", G_OUT, "train", guarded(train_out("parent")), CONTAINS),
    Case("output: train --work-dir is the masks", G_OUT, "train", guarded(train_out("work_is_masks")), IS_INPUT),
    Case("output: train --work-dir is --out", G_OUT, "train", guarded(train_out("same")), "overlaps"),
    Case("output: generate --out is the concept", G_OUT, "generate", guarded(generate_out("concept")), IS_INPUT),
    Case("output: generate --out inside the concept", G_OUT, "generate", guarded(generate_out("inside")), INSIDE),
    Case(
        "output: generate --out holds the prompt file",
        G_OUT,
        "generate",
        guarded(generate_out("prompts_dir")),
        CONTAINS,
    ),
    Case("output: prompt set named ../../escaped", G_OUT, "generate", prompt_set_named("../../escaped"), "escaped"),
    Case("output: prompt set named a/b", G_OUT, "generate", prompt_set_named("a/b"), "'a/b'"),
    Case("output: prompt set named ..", G_OUT, "generate", prompt_set_named(".."), "'..'"),
    Case("output: evaluate --out is the samples index", G_OUT, "evaluate", guarded(evaluate_out("index")), INSIDE),
    Case("output: evaluate --out is a folder", G_OUT, "evaluate", guarded(evaluate_out("folder")), "is a folder"),
    Case("output: evaluate --out is a user's file", G_OUT, "evaluate", guarded(evaluate_out("user")), FOREIGN),
    Case("output: report --out is the runs folder", G_OUT, "report", guarded(report_out_runs), IS_INPUT),
    Case("output: sample --out holds a user's 00.png", G_OUT, "sample", guarded(sample_over_photos), "00.png"),
    Case("os: --out in a folder that refuses writes", G_OS, "masks", permission_denied, "locked"),
    Case("os: disk full while writing", G_OS, "bands", disk_full, "disk"),
    Case("os: --out on a read-only file system", G_OS, "augment", read_only_file_system, "ro"),
    Case("os: prompt file is a folder", G_OS, "generate", prompt_file_is_folder, "is a folder, expected a file"),
    Case("os: prompt file is a FIFO", G_OS, "generate", prompt_file_is_fifo, "not a regular file"),
    Case("os: --params is a folder", G_OS, "masks", params_is_folder, "params.yaml"),
    Case("os: --reference is a folder", G_OS, "generate", reference_is_folder, "ref.png"),
    Case("os: --concept is a file", G_OS, "generate", concept_is_file, "concept"),
]
"""Output-safety and operating-system cases, in table order."""
