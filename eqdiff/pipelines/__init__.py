"""Inference: ``EqDiffPipeline`` with its reference rows, and the ``generate`` stage's work."""
