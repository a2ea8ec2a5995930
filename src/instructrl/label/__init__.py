"""Labelers: a rubric of checks, simulated labelers and panels, and an LLM judge.

* :mod:`.rubric`: deterministic measurements of a response (constraints, toxicity, repetition,
  truncation, topic, language, reference, hallucination) and the metadata flags.
* :mod:`.labeler`: one simulated labeler (weights + noise): Likert, flags, rankings, verdicts,
  demonstrations.
* :mod:`.panel`: a calibrated training panel and a held-out panel.
* :mod:`.judge`: an LLM judge over any OpenAI-compatible endpoint, with the same methods.
* :mod:`.run`: the ``instructrl label`` stage.
"""

from instructrl.label.labeler import OUTCOME_SCORE, Judgement, Labeler, rng_for
from instructrl.label.panel import Calibration, Panel, build_rubric, make_panels, pairwise_agreement
from instructrl.label.rubric import FLAGS, Assessment, Rubric
from instructrl.text.constraints import CONSTRAINT_KINDS, check_constraint

__all__ = [
    "CONSTRAINT_KINDS",
    "FLAGS",
    "OUTCOME_SCORE",
    "Assessment",
    "Calibration",
    "Judgement",
    "Labeler",
    "Panel",
    "Rubric",
    "build_rubric",
    "check_constraint",
    "make_panels",
    "pairwise_agreement",
    "rng_for",
]
