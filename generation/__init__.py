"""Generation: prompts, checkpoints and their loading, the compact model and its trainer, one sampling loop,
the Generate tab. Sub-rooms: ``phantom`` (procedural phantom frames), ``masks`` (mask files and shapes,
the mask-conditioned ControlNet). Stands on ``database`` and ``common``; imports no other room."""
