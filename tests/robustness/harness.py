"""Running a corpus case through the real ``eqdiff`` CLI and judging the outcome (docs/robustness.md).

``Env`` holds the expensive shared inputs (a synthetic subject, one trained tiny concept, its samples, a band
cache made with another base model), each built once on first use. ``run_case`` runs one case in-process
through ``eqdiff.cli.main`` with stderr captured; ``check_outcome`` asserts the contract: a bad input exits 2 with
exactly one stderr line that names the file or field, no traceback, no output created and earlier outputs
untouched; a valid odd input exits 0 and passes the case's own check.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from eqdiff import cli
from eqdiff.prep.sample import make_sample_subject
from robustness.images import mask, photo

TRAIN_ARGS = [
    "-S",
    "train.resolution=32",
    "-S",
    "train.steps=4",
    "-S",
    "train.checkpointing_steps=1",
    "-S",
    "train.checkpoints_total_limit=0",
    "-S",
    "train.with_prior_preservation=false",
    "-S",
    "augment.views_per_photo=1",
    "--device",
    "cpu",
]
"""The shared concept's training settings (tiny preset, 32 px, 4 steps, a checkpoint after every step)."""

GENERATE_ARGS = ["-S", "generate.num_inference_steps=2", "-S", "generate.batch_size=2", "--device", "cpu"]


@dataclass
class Invocation:
    """How a case runs: the CLI arguments and what must (not) exist afterwards."""

    argv: list[str]
    absent: list[Path] = field(default_factory=list)
    """Outputs that must not exist after a refused run."""
    untouched: list[Path] = field(default_factory=list)
    """Existing files or folders whose contents a refused run must leave byte-identical."""
    check: Callable[[], None] | None = None
    """For a valid odd input: asserts that the stage handled it correctly."""
    cleanup: Callable[[], None] | None = None
    """Undoes what the case set up outside plain files (a mount, an immutable flag, a resource limit)."""


@dataclass(frozen=True)
class Case:
    """One bad or odd input: its kind, the stage it is fed to, how to build it and the expected outcome."""

    kind: str
    group: str
    stage: str
    build: Callable[[Env, Path], Invocation]
    names: str | None
    """A refused input: text the one-line error must contain (a file or field name). None: must succeed."""
    handled: str = ""
    """A valid input: what correct handling means (for the table)."""

    @property
    def expected(self) -> str:
        if self.names is None:
            return f"exit 0; {self.handled}"
        return f"exit 2, one line naming `{self.names}`, no traceback, no output"


@dataclass(frozen=True)
class Observed:
    code: int
    stderr: str
    snapshots_before: dict[Path, dict[str, bytes]]


def snapshot(path: Path) -> dict[str, bytes]:
    """Relative path -> bytes of a file or of every file under a folder (hidden ones included)."""
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def run_case(case: Case, env: Env, workdir: Path) -> tuple[Invocation, Observed]:
    """Build the case's inputs under ``workdir`` and run its stage through ``eqdiff.cli.main``."""
    workdir.mkdir(parents=True, exist_ok=True)
    invocation = case.build(env, workdir)
    before = {p: snapshot(p) for p in invocation.untouched}
    stderr = io.StringIO()
    # Run in the case's folder: the CLI reads ./params.yaml by default, and the project's own must not leak in.
    try:
        with contextlib.chdir(workdir), contextlib.redirect_stderr(stderr):
            code = cli.main([case.stage, *invocation.argv])
    finally:
        if invocation.cleanup is not None:
            invocation.cleanup()
    return invocation, Observed(code, stderr.getvalue(), before)


PROGRESS_FRAME = re.compile(r"^.*?\d+%\|[^|]*\|[^\[]*\[[^\]]*\]")
"""One frame of a tqdm progress bar ("desc:  50%|#####     | 1/2 [00:01<00:01, 1.0it/s]")."""


def error_lines(stderr: str) -> list[str]:
    """The non-empty stderr lines once progress-bar frames (redrawn with carriage returns) are removed.

    Progress bars of a stage that had started working (model loading, a model-backed loop) are not messages;
    everything else (log lines, warnings, tracebacks) is, and must not be there.
    """
    segments = (PROGRESS_FRAME.sub("", segment) for segment in re.split(r"[\r\n]+", stderr))
    return [segment for segment in segments if segment.strip()]


def check_outcome(case: Case, invocation: Invocation, observed: Observed) -> None:
    """Assert the case's contract (see the module docstring)."""
    err = observed.stderr
    assert "Traceback" not in err, err
    if case.names is None:
        assert observed.code == 0, err
        if invocation.check is not None:
            invocation.check()
        return
    lines = error_lines(err)
    assert observed.code == 2, err
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith(f"eqdiff {case.stage}: error: "), lines[0]
    assert case.names in lines[0], f"{case.names!r} not named in: {lines[0]}"
    for path in invocation.absent:
        assert not path.exists(), f"{path} was created by a refused run"
        leftovers = [p.name for p in path.parent.glob(f".{path.name}.*") if not p.name.endswith(".lock")]
        assert not leftovers, f"temporary files left beside {path}: {leftovers}"
    for path, contents in observed.snapshots_before.items():
        assert snapshot(path) == contents, f"{path} was modified by a refused run"


def observed_summary(case: Case, observed: Observed, root: Path) -> str:
    """The observed outcome for the table: exit status and the error line with temporary paths elided."""
    if observed.code == 0:
        return "exit 0; handled as expected"
    line = error_lines(observed.stderr)[-1] if observed.stderr.strip() else ""
    line = line.replace(str(root), "…")
    line = re.sub(r"/tmp/\S*?/(?=[^/\s]+)", "…/", line)
    if len(line) > 160:
        line = line[:157] + "..."
    return f"exit {observed.code}: `{line}`"


def make_subject(root: Path, extra: dict[str, bytes] | None = None, count: int = 2) -> Path:
    """``count`` ordinary 48x40 photos (``00.png``...) with masks in ``masks/``, plus ``extra`` files."""
    subject = root / "subject"
    (subject / "masks").mkdir(parents=True)
    for i in range(count):
        photo(seed=i).save(subject / f"{i:02d}.png")
        mask().save(subject / "masks" / f"{i:02d}.png")
    for name, data in (extra or {}).items():
        (subject / name).write_bytes(data)
    return subject


def masks_run(subject: Path, out: Path, *extra: str, backend: str = "files") -> list[str]:
    argv = ["--subject-dir", str(subject), "--class-noun", "toy", "--out", str(out), "-S", f"masks.backend={backend}"]
    if backend == "files":
        argv += ["-S", f"masks.files_dir={subject / 'masks'}"]
    return argv + list(extra)


def train_run(subject: Path, out: Path, *extra: str) -> list[str]:
    return ["--subject-dir", str(subject), "--class-noun", "toy", "--out", str(out), *TRAIN_ARGS, *extra]


def generate_run(concept: Path, out: Path, prompts: Path | None, *extra: str) -> list[str]:
    argv = ["--concept", str(concept), "--out", str(out), *GENERATE_ARGS, *extra]
    return argv + (["--prompts", f"demo={prompts}"] if prompts is not None else [])


class Env:
    """Expensive shared inputs, each built once on first use under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @functools.cached_property
    def subject(self) -> Path:
        """Three synthetic 'toy' photos with masks in ``masks/`` (``eqdiff.prep.sample``)."""
        return make_sample_subject(self.root / "toy", num_photos=3)

    def _cli(self, argv: list[str]) -> None:
        stderr = io.StringIO()
        with contextlib.chdir(self.root), contextlib.redirect_stderr(stderr):  # no ./params.yaml here
            code = cli.main(argv)
        if code != 0:
            raise RuntimeError(f"eqdiff {' '.join(argv)} failed:\n{stderr.getvalue()}")

    @functools.cached_property
    def concept(self) -> Path:
        """A concept trained on ``subject`` with ``TRAIN_ARGS``; its work dir is ``<concept>-work``."""
        out = self.root / "concept"
        argv = ["train", "--subject-dir", str(self.subject), "--class-noun", "toy", "--out", str(out)]
        self._cli(argv + TRAIN_ARGS)
        return out

    @functools.cached_property
    def prompts(self) -> Path:
        path = self.root / "prompts.txt"
        path.write_text("a {} on the beach\n", encoding="utf-8")
        return path

    @functools.cached_property
    def samples(self) -> Path:
        """Two images of ``concept`` for one prompt (``eqdiff generate``)."""
        out = self.root / "samples"
        argv = ["generate", "--concept", str(self.concept), "--out", str(out)]
        argv += ["--prompts", f"unstylized={self.prompts}"]
        self._cli(argv + GENERATE_ARGS + ["-S", "generate.num_images_per_prompt=2"])
        return out

    @functools.cached_property
    def foreign_bands(self) -> Path:
        """A band cache of ``subject`` computed with another base model (tiny preset, seed 1)."""
        out = self.root / "bands-seed1"
        masks = str(self.subject / "masks")
        argv = ["bands", "--subject-dir", str(self.subject), "--masks", masks, "--out", str(out)]
        self._cli(argv + ["-S", "train.resolution=32", "-S", "model.seed=1"])
        return out
