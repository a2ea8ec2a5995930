"""The labeling workbench (``instructrl label serve``): people rate and rank outputs and write demonstrations.

* :mod:`.schema`: what a label holds (Likert, Table 3 flags, ranks with ties, demonstrations) and
  reading it from a form; pure functions.
* :mod:`.imports`: samples or prompts -> tasks, given to labelers with a configurable overlap.
* :mod:`.export`: labels -> ``Ranking`` / ``Demonstration`` records, streamed.
* :mod:`.routes`, :mod:`.admin`: the labeler's pages and the admin's pages.
* :mod:`.agreement`: pairwise agreement (InstructGPT's statistic) with its bootstrap interval,
  Krippendorff's alpha, agreement with the consensus and with gold, throughput; pure functions.
  :mod:`.dashboard`: the admin's agreement page, its JSON and gold items.
* :mod:`.screening`: the paper's four screening criteria and the report with soft cut-offs; pure
  functions. :mod:`.screening_pages`: the applicants' and the admins' screening pages.
* :mod:`.run`: the app and the ``label serve|import|export`` commands (``serve workers=N``: several processes).

The web foundation (database, sign-in, CSRF, the app factory) is :mod:`instructrl.web`.
"""
