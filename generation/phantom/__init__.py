"""Procedural phantom colonoscopy frames (AD and Non-AD) with exact polyp masks, for demos and tests:
``frames`` (the public API and files), ``scene`` (field, mucosa, light, overlay), ``lesion`` (the polyp);
``python -m generation.phantom`` writes a set."""
