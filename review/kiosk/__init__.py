"""The conference kiosk, an app of its own: the game (``game``), its presented image pools (``pools``),
results against chance and the experts (``results``), its screens (``pages``, ``ui``) and its own
database (``database.kiosk``); ``python -m review.kiosk`` builds pools and tends the leaderboard."""
