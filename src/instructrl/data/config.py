"""Config of ``instructrl curate`` (no heavy imports here: ``--help`` stays instant)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from instructrl.config import RunConfig, option, section
from instructrl.records import CATEGORIES, PROMPT_TYPES, SOURCES

FORMATS = ("auto", "jsonl", "csv", "parquet", "hf", "db")


@dataclasses.dataclass
class FieldMap:
    """Where each Prompt field sits in an input record: a column or key name, a dotted path into
    nested objects (``prompt.text``, ``instances.0.input``), or null when the input lacks it.
    A line that is a bare JSON string is the prompt text itself."""

    text: str | None = option("prompt", "Plain-text prompt. Used when 'messages' is null or absent in a record.")
    messages: str | None = option(
        None, "Chat messages [{role, content}, ...] ending with a user turn; takes precedence over 'text'."
    )
    input: str | None = option(
        None, "Optional extra input appended to the text after a blank line (Self-Instruct's 'instances.0.input')."
    )
    user_id: str | None = option(
        "user_id",
        "User id. null: the input has no users and every record counts as its own user (its id). "
        "Mapped but missing or empty in a record: bad input (see on_error).",
    )
    org_id: str | None = option("org_id", "Organization id (optional in each record).")
    id: str | None = option("id", "Record id; absent: '<input name>-<line>'.")
    timestamp: str | None = option(
        "timestamp",
        "Time the prompt was written (ISO 8601 or Unix seconds); the earliest copy of a duplicate survives.",
    )
    source: str | None = option(
        "source", f"Where the prompt came from ({', '.join(SOURCES)}); absent: the input's 'source'."
    )
    type: str | None = option(
        "type", f"Prompt type ({', '.join(PROMPT_TYPES)}); absent: 'plain' (or 'chat' for messages)."
    )
    category: str | None = option("category", f"Use-case category if the log has one ({', '.join(CATEGORIES)}).")
    lang: str | None = option("lang", "Language code given by the log (used only when lang.detect is false).")
    response: str | None = option(
        "response", "A demonstration (labeler-written answer) where the log has one; kept as the Prompt's 'reference'."
    )


@dataclasses.dataclass
class InputConfig:
    """One input file (or saved Hugging Face dataset) and how to read it."""

    path: str = option(
        "",
        "JSONL (.jsonl/.json/.gz), CSV, Parquet file, a directory written by datasets.save_to_disk, or the URL of "
        "the serving database (sqlite:///runs/workbench/workbench.db, postgresql+psycopg://...): its stored API "
        "and playground prompts that may train the next round (consent given, no opt-out).",
    )
    format: Literal["auto", "jsonl", "csv", "parquet", "hf", "db"] = option(
        "auto", "Format; 'auto' decides by suffix, and a URL (scheme://...) is a database."
    )
    name: str = option("", "Short name used in record ids and the report; empty: the file name without suffix.")
    source: str = option("import", f"Default 'source' of its prompts ({', '.join(SOURCES)}).")
    fields: FieldMap = option(FieldMap, "Field mapping.")

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("inputs[].path is required")
        if self.source not in SOURCES:
            raise ValueError(f"inputs[].source {self.source!r} is not one of {', '.join(SOURCES)}")
        if (self.format == "db" or "://" in self.path) and self.fields.messages is None:
            self.fields.messages = "messages"  # the store hands chat prompts over as messages


@dataclasses.dataclass
class FilterConfig:
    """Per-record filters applied while reading."""

    min_chars: int = option(1, "Drop prompts shorter than this many characters (after stripping).")
    max_chars: int = option(20000, "Drop prompts longer than this many characters.")


@dataclasses.dataclass
class DedupConfig:
    """InstructGPT's deduplication: exact copies, then prompts sharing a long common prefix."""

    exact: bool = option(True, "Drop exact duplicates (after lower-casing and collapsing whitespace).")
    prefix_chars: int = option(
        100,
        "Drop prompts whose first N normalized characters equal those of an earlier prompt "
        "(a shared prefix of at least N characters); 0 turns the prefix rule off.",
    )
    keep: Literal["earliest", "first"] = option(
        "earliest",
        "Which copy survives: 'earliest' timestamp (ties and missing timestamps: input order), "
        "or 'first' in input order.",
    )


@dataclasses.dataclass
class CapConfig:
    """At most N prompts per user id (InstructGPT: 200)."""

    max_per_user: int = option(200, "Prompts kept per user id; 0 disables the cap.")
    keep: Literal["random", "earliest"] = option(
        "random", "Which prompts of a capped user stay: a seeded random sample, or the earliest ones."
    )


@dataclasses.dataclass
class SplitConfig:
    """Train/valid/test split by user (or organization): no user appears in two splits."""

    by: Literal["user", "org"] = option(
        "user", "Group key: user id, or organization id (users without one: their user id)."
    )
    method: Literal["hash", "balanced"] = option(
        "hash",
        "'hash': a seeded hash of the group key picks the split, so a user keeps its split when the log grows; "
        "'balanced': groups in seeded random order each go to the split furthest below its target prompt share.",
    )
    train: float = option(0.8, "Target fraction of prompts (hash: of groups) in train.")
    valid: float = option(0.1, "Target fraction in valid.")
    test: float = option(0.1, "Target fraction in test.")

    def __post_init__(self) -> None:
        fr = (self.train, self.valid, self.test)
        if any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
            raise ValueError(
                f"split fractions must be >= 0 and sum to 1, got train={self.train} valid={self.valid} test={self.test}"
            )


@dataclasses.dataclass
class PIIConfig:
    """Personal data (see instructrl.data.pii for how each entity is decided)."""

    action: Literal["mask", "drop", "off"] = option(
        "mask", "Mask findings ('[EMAIL]'), drop the whole prompt, or skip detection."
    )
    entities: list[str] = option(
        ["email", "phone", "credit_card", "national_id", "ip_address", "iban", "street_address"],
        "Entities to look for.",
    )
    phone_regions: list[str] = option(
        ["US", "GB"], "Regions whose national phone formats count (international '+' form always does)."
    )
    address_countries: list[str] = option(["US", "GB", "CA"], "Countries whose postal addresses pyap looks for.")
    national_ids: list[str] = option(
        ["us.ssn", "es.dni", "in_.aadhaar"], "python-stdnum formats of national id numbers (also: gb.nhs, de.idnr)."
    )
    ip_public_only: bool = option(
        True, "Count only public IP addresses (192.168.x.x, 127.0.0.1 are not personal data)."
    )
    mask_format: str = option("[{ENTITY}]", "Replacement text; {ENTITY} / {entity} is the entity name.")


@dataclasses.dataclass
class LangConfig:
    """Language identification with langid (as in the paper)."""

    detect: bool = option(True, "Set each prompt's 'lang' with langid (else keep the log's own field).")
    keep: list[str] = option([], "Keep only these language codes (e.g. ['en']); empty keeps all.")
    languages: list[str] = option([], "Restrict langid to these candidate languages; empty: all 97.")
    max_bytes: int = option(4096, "langid reads at most this many UTF-8 bytes of each prompt.")


@dataclasses.dataclass
class CategoryConfig:
    """Use-case category tagging (InstructGPT's categories) by keyword rules."""

    tag: bool = option(True, "Tag prompts without a category using the keyword rules in instructrl.text.category.")


@dataclasses.dataclass
class StatsConfig:
    """The statistics report."""

    tokenizer: str = option(
        "default",
        "Tokenizer for the length tables: 'default' (SmolLM2's), a model directory with tokenizer.json, "
        "or 'whitespace' (words).",
    )
    token_sample: float = option(
        1.0,
        "Fraction of prompts whose tokens are counted for the length tables, chosen by a hash of the text "
        "(the same prompts every run). Counting is the costliest step at scale; 0.1 of a million prompts "
        "still gives ~100k lengths per table. Every other table covers all prompts.",
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.token_sample <= 1.0:
            raise ValueError(f"stats.token_sample must be in (0, 1], got {self.token_sample}")


@dataclasses.dataclass
class CurateConfig:
    """``instructrl curate``: raw prompt logs -> train/valid/test prompt sets and a statistics report."""

    run: RunConfig = section(RunConfig, "Output directory and seed.")
    inputs: list[InputConfig] = option(
        [],
        "Input files, read in this order. Each is {path, format (auto|jsonl|csv|parquet|hf), name, source, "
        "fields: {text, messages, input, user_id, org_id, id, timestamp, source, type, category, lang, response}}; "
        "a field maps to a column or dotted path (prompt.text, instances.0.input) or null. Defaults: text 'prompt', "
        "user_id 'user_id', the others their own name. On the command line: "
        "'inputs=[{path: log.jsonl, source: api, fields: {text: query}}]'.",
    )
    on_error: Literal["stop", "skip"] = option(
        "stop", "Bad input (broken line, missing user id, unreadable file): stop with file:line, or skip and count it."
    )
    filters: FilterConfig = section(FilterConfig, "Length filters.")
    dedup: DedupConfig = section(DedupConfig, "Deduplication.")
    cap: CapConfig = section(CapConfig, "Per-user cap.")
    split: SplitConfig = section(SplitConfig, "Split by user.")
    pii: PIIConfig = section(PIIConfig, "Personal data.")
    lang: LangConfig = section(LangConfig, "Language identification.")
    category: CategoryConfig = section(CategoryConfig, "Category tagging.")
    stats: StatsConfig = section(StatsConfig, "Statistics report.")
    batch_size: int = option(4096, "Records processed together (language id and token counts run per batch).")
    workers: int = option(
        0,
        "Worker processes that clean batches in parallel (0: all in this process); the output is the same either way.",
    )

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.dedup.prefix_chars < 0:
            raise ValueError(f"dedup.prefix_chars must be >= 0, got {self.dedup.prefix_chars}")
        if self.cap.max_per_user < 0:
            raise ValueError(f"cap.max_per_user must be >= 0, got {self.cap.max_per_user}")
