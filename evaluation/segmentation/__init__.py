"""The downstream segmentation test: do synthetic image+mask pairs help a small U-Net find polyps in real images?

``settings`` (what defines a run), ``data`` (validated pairs, splits and subsets), ``model`` (the U-Net and its
training), ``experiment`` (the regimes, Dice and IoU, the report); ``python -m evaluation.segmentation`` runs it.
"""
