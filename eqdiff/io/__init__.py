"""Shared plumbing every stage uses: atomic artefacts and locks, output safety, stage manifests, the artefact
schemas, run folders and image sheets.
"""
