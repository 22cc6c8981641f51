"""The report's static HTML gallery (docs/method.md, "Report").

``index.html``: first the samples at a glance (per subject, one row per prompt and one column per variant, its
first sample each, every variant headed by its world numbers: the leaks, World-T, World-I), then the averaged
table in Table 1's layout with the paper's rows (marked), the trade-off plot, then per subject its own Table 1
table, its mask self-check warnings and a link to its page. ``gallery/<subject>.html``:
the subject's table; its mask self-check warnings; its photos and the masks overlay sheet; the band sheet (target
| LOW | HIGH | mask) and the augment sheet when those stages ran; then per prompt set one row per prompt with the
variants side by side. Pages use relative paths to images copied into ``gallery/assets/``, so the report is
self-contained and opens from the file system with no server.

Each page ends with a small inline script that, once the page has loaded, sets on ``document.body``:
``data-images-loaded = "<loaded>/<total>"``, ``data-side-by-side`` ("true" when, in every prompt row, the
variants' images are laid out left to right on one line) and, on the index, ``data-first-screen`` (the variants
whose first sample lies wholly inside the window as it opens, comma-separated); headless browser tests read them.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from eqdiff.errors import DataError
from eqdiff.evaluation.records import Run
from eqdiff.evaluation.sample_index import read_sample_index
from eqdiff.evaluation.table1 import METRIC_TITLES, PAPER_SOURCE, html_table, table_sets, world_sentence
from eqdiff.io.artifacts import ArtifactError, save_png, write_text
from eqdiff.io.schemas.stage_manifests import MasksManifest
from eqdiff.io.sheets import thumbnail
from eqdiff.prep.subjects import discover_subject, load_image

THUMBNAIL_SIDE = 256
"""Longest side of a gallery thumbnail in pixels (smaller images are copied as they are)."""
SHEET_SIDE = 1600
"""Longest side of a copied sheet (overlay, band, augment sheets) in pixels."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.banner { background: #b22222; color: #fff; padding: .6em 1em; font-weight: bold; font-size: 1.1em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
td:first-child, th { text-align: left; }
caption { text-align: left; font-size: .85em; color: #555; }
tr.paper td { font-style: italic; background: #f3f3e8; color: #555; }
table.variants td { text-align: left; vertical-align: top; }
table.glance img { width: 112px; height: auto; display: block; }
table.glance .numbers { font-weight: normal; font-size: .75em; color: #555; max-width: 20em; }
.warnings li { color: #b22222; }
.row { display: flex; flex-wrap: wrap; gap: .5em; align-items: flex-start; }
figure { margin: 0; font-size: .8em; max-width: 160px; }
figure img { width: 160px; height: auto; display: block; }
img.sheet { max-width: 100%; height: auto; display: block; }
"""

_PAGE_SCRIPT = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = loaded + "/" + images.length;
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr.prompt"));
  var sideBySide = rows.length > 0 && rows.every(function (row) {
    var cells = Array.prototype.slice.call(row.querySelectorAll("td.variant img"));
    var boxes = cells.map(function (i) { return i.getBoundingClientRect(); });
    return boxes.length > 1 && boxes.every(function (b, k) {
      return k === 0 || (b.left >= boxes[k - 1].right && b.top < boxes[k - 1].bottom);
    });
  });
  document.body.dataset.sideBySide = String(sideBySide);
  var first = document.querySelector("table.glance tr.glance-prompt");
  var seen = first ? Array.prototype.slice.call(first.querySelectorAll("td.variant")).filter(function (cell) {
    var box = cell.getBoundingClientRect();
    return box.bottom <= window.innerHeight && box.right <= window.innerWidth;
  }) : [];
  document.body.dataset.firstScreen = seen.map(function (cell) { return cell.dataset.variant; }).join(",");
});
</script>"""


def _page(title: str, calibrated: bool, body: Iterable[str], world: bool = False) -> str:
    if calibrated:
        banner = ""
    elif world:  # the world evaluators are calibrated (their measured accuracy); CLIP / DINO are not
        banner = (
            '<p class="banner">UNCALIBRATED: the CLIP-T, CLIP-I and DINO-I columns (random-weight CLIP / DINO '
            "models). World-T, World-I and the leaks are read by the world evaluators, calibrated by their measured "
            "accuracy (docs/world-evaluators.md).</p>"
        )
    else:
        banner = (
            '<p class="banner">UNCALIBRATED (random weights): metrics from random metric models and/or noise '
            "samples of the tiny preset; they exercise the pipeline and mean nothing.</p>"
        )
    head = f'<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>'
    return "\n".join(
        ["<!DOCTYPE html>", '<html lang="en">', "<head>", head, "</head>", "<body>", f"<h1>{html.escape(title)}</h1>"]
        + [banner, *body, _PAGE_SCRIPT, "</body>", "</html>", ""]
    )


def _copy_image(source: Path, destination: Path, side: int) -> None:
    """Copy ``source`` (validated by ``load_image``) as a PNG no larger than ``side``."""
    save_png(destination, thumbnail(load_image(source), side))


def _figure(src: str, caption: str) -> str:
    text = html.escape(caption)
    image = f'<img src="{html.escape(src)}" alt="{text}" loading="eager">'
    return f"<figure>{image}<figcaption>{text}</figcaption></figure>"


def _masks_manifest(run: Run) -> MasksManifest | None:
    """``run``'s subject's ``masks/masks.json``, or None without that file."""
    manifest = run.masks_dir / MasksManifest.FILE
    if not manifest.is_file():
        return None
    try:
        return MasksManifest.read(manifest)
    except ArtifactError as exc:
        raise DataError(f"{exc} (re-run the masks stage)") from None


def mask_warnings(run: Run) -> list[str] | None:
    """The masks stage's warnings for ``run``'s subject (``masks/masks.json``), or None without that file."""
    manifest = _masks_manifest(run)
    return None if manifest is None else list(manifest.warnings)


def mask_fallbacks(run: Run) -> list[str] | None:
    """One line per photo whose refined mask fell back to plain U²-Netp (``eqdiff.prep.mask_refine``, step 7),
    or None without ``masks.json``."""
    manifest = _masks_manifest(run)
    if manifest is None:
        return None
    return [
        f"{record.photo}: refinement kept {record.details.get('kept_of_plain', 0):.0%} of the plain mask's body; "
        "the plain U²-Netp mask is used"
        for record in manifest.photos.values()
        if record.details.get("fallback")
    ]


def _warnings_section(run: Run) -> list[str]:
    warnings, fallbacks = mask_warnings(run), mask_fallbacks(run)
    if warnings is None:
        return [f'<p class="mask-checks">No {MasksManifest.FILE} at {html.escape(str(run.masks_dir))}.</p>']
    notes = []
    if fallbacks:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in fallbacks)
        notes = [f'<p class="mask-checks">Mask refinement fell back on {len(fallbacks)} photo(s):</p><ul>{items}</ul>']
    if not warnings:
        return ['<p class="mask-checks">Mask self-checks: no warning.</p>', *notes]
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    summary = f'<p class="mask-checks">Mask self-checks: {len(warnings)} warning(s).</p>'
    return [summary, f'<ul class="warnings">{items}</ul>', *notes]


def _sheets(run: Run, gallery: Path) -> list[str]:
    """Copy the subject's photos and sheets (masks overlay, band sheet, augment sheet) and return their HTML."""
    subject_dir = Path(run.evaluation.subject_dir)
    if not subject_dir.is_dir():
        raise DataError(
            f"{subject_dir}: subject folder named in {run.samples_dir.parent / 'evaluation.json'} "
            "not found (run the report from the directory evaluate ran in)"
        )
    figures = []
    for index, photo in enumerate(discover_subject(subject_dir, run.subject, min_photos=1).photos):
        relative = f"assets/{run.subject}/reference/{index:02d}.png"
        _copy_image(photo, gallery / relative, THUMBNAIL_SIDE)
        figures.append(_figure(relative, photo.name))
    section = ["<h2>Reference photos</h2>", '<div class="row">', *figures, "</div>"]
    sheets = (
        ("masks", "masks/overlay.png", "Masks overlay (background dimmed, mask outlined; red frame: a warning)"),
        ("bands", "bands/sheet.png", "Band sheet: target | LOW | HIGH | mask"),
        ("augment", "augment/sheet.png", "Augment sheet: reference views and their masks"),
    )
    for name, path, title in sheets:
        source = run.subject_root / path
        section.append(f"<h2>{html.escape(title)}</h2>")
        if not source.is_file():
            section.append(f"<p>No {html.escape(path)} under {html.escape(str(run.subject_root))}.</p>")
            continue
        relative = f"assets/{run.subject}/{name}_sheet.png"
        _copy_image(source, gallery / relative, SHEET_SIDE)
        section.append(f'<img class="sheet {name}" src="{relative}" alt="{html.escape(title)}">')
    return section


def _variants_side_by_side(runs: list[Run], gallery: Path) -> list[str]:
    """Copy every variant's images and return, per prompt set, a table: one row per prompt, one column per
    variant."""
    images: dict[tuple[str, int], dict[str, list[str]]] = {}
    prompts: dict[tuple[str, int], str] = {}
    for run in runs:
        index = read_sample_index(run.samples_dir)
        for image in index.images:
            where = (image.prompt_set, image.prompt_index)
            prompts[where] = image.prompt
            relative = (
                f"assets/{run.subject}/{run.variant}/{image.prompt_set}/"
                f"{image.prompt_index:03d}_{image.sample_index:02d}.png"
            )
            _copy_image(index.path(image), gallery / relative, THUMBNAIL_SIDE)
            images.setdefault(where, {}).setdefault(run.variant, []).append(relative)
    variants = [run.variant for run in runs]
    section = ["<h2>Samples: the variants side by side</h2>"]
    for prompt_set in table_sets(s for s, _ in prompts):
        rows = sorted(index for s, index in prompts if s == prompt_set)
        if not rows:
            continue
        header = "".join(f"<th>{html.escape(v)}</th>" for v in variants)
        section += [f"<h3>{prompt_set}</h3>", f'<table class="variants" data-prompt-set="{prompt_set}">']
        section.append(f"<tr><th>Prompt</th>{header}</tr>")
        for index in rows:
            cells = []
            for variant in variants:
                shown = images[(prompt_set, index)].get(variant, [])
                figures = "".join(_figure(src, f"{variant} #{k}") for k, src in enumerate(sorted(shown)))
                cells.append(f'<td class="variant" data-variant="{html.escape(variant)}">{figures or "—"}</td>')
            prompt = html.escape(prompts[(prompt_set, index)])
            section.append(f'<tr class="prompt"><td>{prompt}</td>{"".join(cells)}</tr>')
        section.append("</table>")
    return section


GLANCE_SIDE = 112
"""Width in pixels of a sample on the index's first screen."""


def _glance_numbers(blocks: dict[str, Any]) -> str:
    """One variant's world numbers on one subject, compact: ``unstylized: scene leak 0.40, World-I 0.55; ...``."""
    shown = ("style_leak", "scene_leak", "world_text", "world_identity")
    parts = []
    for prompt_set in (s for s in table_sets(blocks) if s in blocks):
        values = [
            f"{METRIC_TITLES[k]} {blocks[prompt_set][k]:.2f}" for k in shown if blocks[prompt_set].get(k) is not None
        ]
        if values:
            parts.append(f"{prompt_set}: {', '.join(values)}")
    return "; ".join(parts)


def _at_a_glance(runs: list[Run], summary: dict[str, Any]) -> list[str]:
    """The index's first screen: per subject, one row per prompt and one column per variant (the first sample of
    each, from the subject page's copies), each variant headed by its world numbers on that subject."""
    section = ["<h2>Samples at a glance: the variants side by side</h2>"]
    for subject in sorted({run.subject for run in runs}):
        subject_runs = [run for run in runs if run.subject == subject]
        variants = [run.variant for run in subject_runs]
        numbers = summary["subjects"][subject]
        header = "".join(
            f'<th data-variant="{html.escape(v)}">{html.escape(v)}'
            f'<div class="numbers">{html.escape(_glance_numbers(numbers.get(v, {})))}</div></th>'
            for v in variants
        )
        rows = {}
        for run in subject_runs:
            for image in read_sample_index(run.samples_dir).images:
                if image.sample_index == 0:
                    src = (
                        f"gallery/assets/{run.subject}/{run.variant}/{image.prompt_set}/"
                        f"{image.prompt_index:03d}_{image.sample_index:02d}.png"
                    )
                    rows.setdefault((image.prompt_set, image.prompt_index, image.prompt), {})[run.variant] = src
        section += [
            f'<h3><a href="gallery/{html.escape(subject)}.html">{html.escape(subject)}</a></h3>',
            f'<table class="variants glance" data-subject="{html.escape(subject)}">',
            f"<tr><th>Prompt</th>{header}</tr>",
        ]
        order = {name: k for k, name in enumerate(table_sets(s for s, _, _ in rows))}
        for (_, _, prompt), shown in sorted(rows.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
            cells = "".join(
                f'<td class="variant" data-variant="{html.escape(v)}">'
                + (
                    f'<img src="{html.escape(shown[v])}" alt="{html.escape(v)}" width="{GLANCE_SIDE}">'
                    if v in shown
                    else "—"
                )
                + "</td>"
                for v in variants
            )
            section.append(f'<tr class="glance-prompt"><td>{html.escape(prompt)}</td>{cells}</tr>')
        section.append("</table>")
    return section


def _caption(sets: dict[str, dict[str, Any]], count_key: str) -> str:
    counts = {s: row[count_key] for variant in sets.values() for s, row in variant.items()}
    what = "subjects" if count_key == "n_subjects" else "images"
    return "; ".join(f"{s}: {n} {what}" for s, n in counts.items())


def write_gallery(runs: list[Run], summary: dict[str, Any], out_dir: Path) -> None:
    """Write ``out_dir/index.html`` and ``out_dir/gallery/<subject>.html`` with their images."""
    gallery = out_dir / "gallery"
    calibrated = summary["calibrated"]
    world = summary["world_evaluator"] is not None
    subjects = sorted({run.subject for run in runs})
    per_subject: list[str] = ["<h2>Per subject</h2>"]
    for subject in subjects:
        subject_runs = [run for run in runs if run.subject == subject]
        blocks = summary["subjects"][subject]
        table = html_table(blocks, _caption(blocks, "n_images"), subject=subject, world=world)
        checks = _warnings_section(subject_runs[0])
        body = ['<p><a href="../index.html">back to the summary</a></p>', table, *checks]
        body += _sheets(subject_runs[0], gallery)
        body += _variants_side_by_side(subject_runs, gallery)
        write_text(gallery / f"{subject}.html", _page(f"EqDiff gallery: {subject}", calibrated, body, world))
        link = f'<a href="gallery/{html.escape(subject)}.html">{html.escape(subject)}</a>'
        per_subject += [f"<h3>{link}</h3>", table, *checks]
    bounds = summary.get("intervals", {}).get("variants")  # 95 % intervals of the world metrics, in brackets
    average = html_table(
        summary["variants"], _caption(summary["variants"], "n_subjects"), paper=True, world=world, intervals=bounds
    )
    body = [
        *_at_a_glance(runs, summary),
        "<h2>Average over subjects</h2>",
        f"<p>Rows marked <em>paper:</em> are the values of {PAPER_SOURCE}, for reference; not measured here.</p>",
        *([f'<p class="world">{html.escape(world_sentence(summary["world_evaluator"]))}</p>'] if world else []),
        average,
        '<img src="tradeoff.png" alt="CLIP-T vs DINO-I trade-off" width="600">',
        *per_subject,
    ]
    write_text(out_dir / "index.html", _page("EqDiff evaluation report", calibrated, body, world))
