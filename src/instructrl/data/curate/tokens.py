"""Token counts for the curation report's length tables: a tokenizer.json, or whitespace words."""

from __future__ import annotations

from pathlib import Path


class TokenCounter:
    """Token counts for the length tables: a tokenizer.json through ``tokenizers``, or words."""

    @staticmethod
    def resolve(spec: str) -> str:
        """'whitespace', or the path of a tokenizer.json for 'default' or a model directory."""
        if spec == "whitespace":
            return spec
        if spec == "default":
            from instructrl.models.default import default_model_dir

            path = Path(default_model_dir()) / "tokenizer.json"
        else:
            base = Path(spec).expanduser()
            path = base if base.is_file() else base / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(
                f"stats.tokenizer: no tokenizer.json at {path} (use 'default', a model directory or 'whitespace')"
            )
        return str(path)

    def __init__(self, spec: str):
        path = self.resolve(spec)
        self.spec = spec
        if path == "whitespace":
            self._tok = None
            return
        import tokenizers

        self._tok = tokenizers.Tokenizer.from_file(path)

    def __call__(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        if self._tok is None:
            return [len(t.split()) for t in texts]
        return [len(e.ids) for e in self._tok.encode_batch_fast(texts, add_special_tokens=False)]
