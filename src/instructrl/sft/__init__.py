"""Supervised fine-tuning on demonstrations (``instructrl sft``)."""
