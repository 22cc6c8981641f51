"""Training: the recipe (one training run's loop), its data, resumable training-state checkpoints,
validation images, and the ``train`` stage's work around them.
"""
