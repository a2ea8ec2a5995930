"""The labeling workbench (``instructrl label serve``): people rate and rank outputs and write demonstrations.

* :mod:`.schema`: what a label holds (Likert, Table 3 flags, ranks with ties, demonstrations) and
  reading it from a form; pure functions.
* :mod:`.imports`: samples or prompts -> tasks, given to labelers with a configurable overlap.
* :mod:`.export`: labels -> ``Ranking`` / ``Demonstration`` records, streamed.
* :mod:`.routes`, :mod:`.admin`: the labeler's pages and the admin's pages.
* :mod:`.run`: the app and the ``label serve|import|export`` commands.

The web foundation (database, sign-in, CSRF, the app factory) is :mod:`instructrl.web`.
"""
