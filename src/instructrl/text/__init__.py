"""Text measurements shared by curation, the simulated labelers and evaluation.

One job per module: :mod:`.language` (langid, batched), :mod:`.category` (use-case keyword rules),
:mod:`.toxicity`, :mod:`.constraints` (verifiable instructions), :mod:`.overlap` (content words,
F1, echo, numbers) and :mod:`.degeneration` (repetition, runs, truncation). Nothing is imported
here, so importing one module loads only what it needs; none imports a stage.
"""
