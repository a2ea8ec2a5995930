"""``instructrl serve``: an OpenAI-compatible API and the playground over instructrl or Hugging Face models.

* :mod:`.engine`: the decode engines (continuous batching; one request at a time with HF generate).
* :mod:`.api`: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (streamed or not), ``/v1/prompts``.
* :mod:`.keys`: API keys, keyless local mode, rate limits.
* :mod:`.playground`: chat, side-by-side comparison, the training-data notice and opt-outs.
* :mod:`.run`: loading the models and the commands (``serve``, ``serve key create|revoke``, ``serve export``).

It is built on :mod:`instructrl.web` (one database, one set of users and sessions with the workbench).
"""
