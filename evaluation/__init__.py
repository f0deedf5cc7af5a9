"""Evaluation: feature extractors and their cache, FID/KID/PRDC, diversity, memorisation, label fidelity,
augmentation utility, the scorecard per checkpoint, the Evaluate tab. Sub-rooms: ``segmentation`` (the
downstream segmentation test) and ``study`` (the analysis of a study's ratings and the Analysis tab)."""
