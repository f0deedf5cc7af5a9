"""The shared store, the ground floor every room stands on: the SQLite schema and one module per noun.

``schema`` (migrations, recorded by name), ``connection`` (``open_db``, ``connect``), ``images``
(images and their provenance), ``checkpoints``, ``raters`` (people, sessions, invitations),
``studies`` (studies, their images and trials), ``ratings``, ``metric_results``, ``masks``, and
``kiosk`` (the conference kiosk's own database). All SQL of the project lives here; nothing here
imports a room.
"""
