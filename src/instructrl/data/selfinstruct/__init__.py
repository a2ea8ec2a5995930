"""Self-Instruct (Wang et al. 2022): bootstrap instruction data from a small seed set with the model itself.

Modules: ``tasks`` (the task format, seed loading, demonstrations), ``prompts`` (prompt builders),
``parse`` (reading model output), ``filters`` (instruction and instance filters), ``novelty`` (the
exact, fast ROUGE-L novelty index), ``run`` (the stage), ``report`` (counts and the overlap plot).
The seed set shipped with instructrl is ``builtin_seeds.jsonl`` in this folder.
"""
