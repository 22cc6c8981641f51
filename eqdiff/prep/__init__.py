"""Everything before training: subject folders and photos, class nouns, masks (U²-Netp, Grounded-SAM, the
refinement and its self-checks), reference views (augment), the band cache, class images (prior) and the
embedded demo's synthetic subject (sample).
"""
