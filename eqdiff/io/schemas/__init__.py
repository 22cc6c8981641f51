"""One frozen dataclass per JSON artefact (docs/architecture.md, "Artefacts and their schemas"): the stage that
writes a file and every stage that reads it go through the same class, so they cannot disagree.

Each class has ``to_json()`` (the mapping ``eqdiff.io.artifacts.write_json`` writes: the same keys, in the same
order, as the file has always held) and ``from_json(data, where)`` (validation with one line naming the file and
the field), and ``read(path)`` for both at once. ``samples``: ``index.json``; ``evaluation``: ``metrics.json``
and ``evaluation.json``; ``concept``: ``concept.json``; ``stage_manifests``: the cached stages' manifests
(``masks.json``, ``augment.json``, ``bands.json``, ``prior.json``). Import the module that defines a class, so
that a stage's DVC code deps list only the schemas it reads.
"""
