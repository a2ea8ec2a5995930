"""instructrl: train language models to follow instructions, the InstructGPT way."""

__version__ = "0.1.0"
