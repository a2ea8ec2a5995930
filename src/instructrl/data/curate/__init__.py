"""``instructrl curate``: raw prompt logs -> ``train/valid/test.jsonl`` + a statistics report.

Two streaming passes and one decision step in between; texts are never held in memory, only
about 70 bytes of keys per prompt:

1. **Read and clean** (:mod:`.read`, :mod:`.clean`) every input record in batches: map its fields
   onto a Prompt, drop bad or out-of-range records, find personal data (mask or drop), identify the
   language (langid, batched), tag the category, count tokens (:mod:`.tokens`). The cleaned record
   goes to a spill file on disk; only compact keys stay in memory (:mod:`.columns`: 64-bit hashes of
   the normalized text, of its first N characters, of the user and the split group; time, token
   counts, codes).
2. **Decide** on those arrays (:mod:`instructrl.data.select`): exact duplicates, then shared
   prefixes (the earliest copy survives), the per-user cap, and the split of every user. Texts are
   compared by 64-bit hashes: two different prompts collide with probability ~n²/2⁶⁵ (3e-8 for a
   million prompts), which would drop one of them as a duplicate.
3. **Write** (:mod:`.write`) the spill file's survivors into their split files (atomically), then
   re-read the written files and prove that no user (or organization) appears in two splits.

The stage entry is :func:`instructrl.data.curate.run.run`.
"""
