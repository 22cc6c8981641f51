"""Pipeline stages: one module per ``eqdiff`` sub-command, each a thin door to one typed function."""
