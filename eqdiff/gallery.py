"""The report's static HTML gallery (docs/method.md, Evaluation): per subject, the reference photos and masks, then each
variant's images prompt by prompt. Pages use relative paths to thumbnails copied into ``gallery/assets/``, so
the report is self-contained and opens from the file system with no server.

Each page ends with a small inline script that, once the page has loaded, sets
``document.body.dataset.imagesLoaded = "<loaded>/<total>"``; a headless browser test reads it to check that
every image resolves.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from eqdiff.artifacts import save_png, write_text
from eqdiff.data import discover_subject, load_image
from eqdiff.errors import DataError
from eqdiff.sample_index import PROMPT_SETS, read_sample_index

if TYPE_CHECKING:
    from eqdiff.report import Run

THUMBNAIL_SIDE = 256
"""Longest side of a gallery thumbnail in pixels (smaller images are copied as they are)."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.banner { background: #b22222; color: #fff; padding: .6em 1em; font-weight: bold; font-size: 1.1em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
td:first-child, td:nth-child(2), th { text-align: left; }
.row { display: flex; flex-wrap: wrap; gap: .5em; align-items: flex-start; }
figure { margin: 0; font-size: .8em; max-width: 160px; }
figure img { width: 160px; height: auto; display: block; }
h3 { margin-bottom: .2em; }
"""

_COUNT_SCRIPT = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = loaded + "/" + images.length;
});
</script>"""


def _page(title: str, calibrated: bool, body: Iterable[str]) -> str:
    banner = (
        ""
        if calibrated
        else (
            '<p class="banner">UNCALIBRATED (random weights): metrics from random metric models and/or noise '
            "samples of the tiny preset; they exercise the pipeline and mean nothing.</p>"
        )
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            f"<h1>{html.escape(title)}</h1>",
            banner,
            *body,
            _COUNT_SCRIPT,
            "</body>",
            "</html>",
            "",
        ]
    )


def _thumbnail(source: Path, destination: Path) -> None:
    """Copy ``source`` (validated by ``load_image``) as a PNG no larger than ``THUMBNAIL_SIDE``."""
    image = load_image(source)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    save_png(destination, image)


def _figure(src: str, caption: str) -> str:
    text = html.escape(caption)
    image = f'<img src="{html.escape(src)}" alt="{text}" loading="eager">'
    return f"<figure>{image}<figcaption>{text}</figcaption></figure>"


def metrics_table(blocks: dict[str, dict[str, Any]], count_key: str) -> str:
    """An HTML table with rows = variant x prompt set, columns CLIP-T, CLIP-I, DINO-I and a count."""
    rows = [
        "<table>",
        f"<tr><th>Variant</th><th>Prompts</th><th>CLIP-T</th><th>CLIP-I</th><th>DINO-I</th>"
        f"<th>{html.escape(count_key)}</th></tr>",
    ]
    for variant, sets in blocks.items():
        for prompt_set, row in sets.items():
            cells = "".join(f"<td>{row[k]:.3f}</td>" for k in ("clip_t", "clip_i", "dino_i"))
            rows.append(
                f"<tr><td>{html.escape(variant)}</td><td>{prompt_set}</td>{cells}<td>{row[count_key]}</td></tr>"
            )
    return "\n".join(rows + ["</table>"])


def _references(runs: list[Run], gallery: Path, subject: str) -> list[str]:
    """Copy the subject's photos (and masks, where present) and return their HTML section."""
    subject_dir = Path(runs[0].metrics["subject_dir"])
    if not subject_dir.is_dir():
        raise DataError(
            f"{subject_dir}: subject folder named in {runs[0].samples_dir.parent / 'metrics.json'} "
            "not found (run the report from the directory evaluate ran in)"
        )
    photos = discover_subject(subject_dir, subject, min_photos=1).photos
    masks_dir = runs[0].masks_dir
    figures = []
    for index, photo in enumerate(photos):
        relative = f"assets/{subject}/reference/{index:02d}.png"
        _thumbnail(photo, gallery / relative)
        figures.append(_figure(relative, photo.name))
        mask = masks_dir / f"{photo.stem}.png"
        if mask.is_file():
            mask_relative = f"assets/{subject}/reference/{index:02d}_mask.png"
            _thumbnail(mask, gallery / mask_relative)
            figures.append(_figure(mask_relative, f"mask {photo.stem}"))
    note = "" if masks_dir.is_dir() else f"<p>No masks folder at {html.escape(str(masks_dir))}.</p>"
    return ["<h2>Reference photos and masks</h2>", note, '<div class="row">', *figures, "</div>"]


def _variant_section(run: Run, gallery: Path) -> list[str]:
    """Copy one variant's generated images and return its HTML: prompt set, then prompt by prompt."""
    index = read_sample_index(run.samples_dir)
    section = [f"<h2>Variant {html.escape(run.variant)}</h2>"]
    for prompt_set in PROMPT_SETS:
        images = sorted(
            (im for im in index.images if im.prompt_set == prompt_set),
            key=lambda im: (im.prompt_index, im.sample_index),
        )
        if not images:
            continue
        section.append(f"<h3>{prompt_set}</h3>")
        current = None
        for image in images:
            if image.prompt_index != current:
                if current is not None:
                    section.append("</div>")
                current = image.prompt_index
                section += [f"<p>{html.escape(image.prompt)}</p>", '<div class="row">']
            relative = (
                f"assets/{run.subject}/{run.variant}/{prompt_set}/{image.prompt_index:03d}_{image.sample_index:02d}.png"
            )
            _thumbnail(image.path, gallery / relative)
            section.append(_figure(relative, f"sample {image.sample_index}"))
        section.append("</div>")
    return section


def write_gallery(runs: list[Run], summary: dict[str, Any], out_dir: Path) -> None:
    """Write ``out_dir/index.html`` and ``out_dir/gallery/<subject>.html`` with their thumbnails."""
    gallery = out_dir / "gallery"
    calibrated = summary["calibrated"]
    subjects = sorted({run.subject for run in runs})
    for subject in subjects:
        subject_runs = [run for run in runs if run.subject == subject]
        body = [
            '<p><a href="../index.html">back to the summary</a></p>',
            metrics_table(summary["subjects"][subject], "n_images"),
        ]
        body += _references(subject_runs, gallery, subject)
        for run in subject_runs:
            body += _variant_section(run, gallery)
        write_text(gallery / f"{subject}.html", _page(f"EqDiff gallery: {subject}", calibrated, body))
    links = "".join(f'<li><a href="gallery/{html.escape(s)}.html">{html.escape(s)}</a></li>' for s in subjects)
    body = [
        "<h2>Average over subjects</h2>",
        metrics_table(summary["variants"], "n_subjects"),
        '<img src="tradeoff.png" alt="CLIP-T vs DINO-I trade-off" width="600">',
        "<h2>Subjects</h2>",
        f"<ul>{links}</ul>",
    ]
    write_text(out_dir / "index.html", _page("EqDiff evaluation report", calibrated, body))
