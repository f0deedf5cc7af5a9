"""Review: registration of real images, blinded studies (design, schedule, presentation, audit, the rules
in ``studies``), accounts, the simulated rater panel, the Rate and Studies tabs. Sub-room: ``kiosk``, the
conference game. Stands on ``generation`` (to make a study's missing images), ``database`` and ``common``."""
