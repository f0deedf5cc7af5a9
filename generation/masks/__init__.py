"""Masks: reading and checking mask files (``files``), reshaped and procedural mask shapes (``shapes``),
the mask-conditioned ControlNet (``model``), its training (``python -m generation.masks.train``) and
its sampling of image+mask pairs (``sampling``, ``python -m generation.masks.sample``)."""
