"""Model loading (HF directory, hub id, GGUF, the default model), tokenizers and chat templates,
tiny offline models for tests, and checkpoints. No training logic lives here."""

from instructrl.models.loading import (  # noqa: F401
    FALLBACK_CHAT_TEMPLATE,
    encode_chat,
    encode_prompt,
    load_model,
    load_tokenizer,
    render_prompt,
    resolve_model_path,
)
