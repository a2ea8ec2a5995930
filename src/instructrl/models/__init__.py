"""Model loading (HF directory, hub id, GGUF, the default model), tokenizers and chat templates, the
scalar-head model, forward passes at response positions, generation engines, tiny offline models for
tests, and checkpoints. No training logic lives here. Import the modules themselves (the package
imports nothing, so that a light module here does not pull in torch)."""
