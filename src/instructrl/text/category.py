"""Use-case categories (InstructGPT's Table 1) by keyword rules.

A transparent baseline, not a classifier: the first rule that matches the first 300 characters of
the prompt (lower-cased) decides, in this order:

1. ``chat``: a conversation with more than one user turn (or a prompt of type ``chat``);
2. ``closed_qa``: a question about a given text ("based on the passage", "according to the text");
3. ``summarization``: "summarize", "summary of", "tl;dr", "key points", "in a nutshell";
4. ``classification``: "classify", "categorize", "sentiment", "which category", "is this ... spam";
5. ``extraction``: a clause starting "extract", "pull out", "find all", "list all the names/...";
6. ``rewrite``: a clause starting "rewrite", "rephrase", "paraphrase", "translate", "proofread",
   "edit", "simplify", "correct/fix the grammar", "make this more ...";
7. ``brainstorming``: a clause starting "brainstorm", "suggest", "come up with", "give me some
   ideas", "list N ways/ideas/tips", or "ideas for" anywhere;
8. ``generation``: a clause starting "write", "compose", "create", "generate", "draft",
   "continue", role play ("act as", "pretend", "imagine", "you are a"), or "a poem/story/essay/
   tweet/..." anywhere;
9. ``open_qa``: a question (starts with a question word or "explain/describe/discuss/analyze/
   compare", or holds a "?");
10. ``other``.

Rules 5-8 look at the start of each clause (text split at ``. ! ? : ; newline``, after a polite
opener such as "please", "can you", "i want you to"), so "write" in "the write-up I attached" does
not make a generation prompt. A log's own category always wins over these rules.
"""

from __future__ import annotations

import re

from instructrl.records import PromptText

# (name, substrings one of which must occur, the pattern); the substring test is a cheap pre-check
_ANYWHERE = [
    (
        "closed_qa",
        ("based on the", "according to the", "using the", "answer the"),
        re.compile(
            r"\b(?:based on|according to|using) the (?:above |following |given )?"
            r"(?:text|passage|article|paragraph|context|document|story)\b"
            r"|\banswer the (?:following )?questions? (?:based on|about|using|from) the\b"
        ),
    ),
    (
        "summarization",
        ("summar", "tl;dr", "tldr", "key points", "nutshell", "main points"),
        re.compile(r"\bsummari[sz]e|\bsummary of\b|\btl;?dr\b|\bkey points\b|\bin a nutshell\b|\bmain points\b"),
    ),
    (
        "classification",
        ("classif", "categori", "sentiment", "which category", "is this", "is the following"),
        re.compile(
            r"\bclassify\b|\bcategori[sz]e\b|\bsentiment\b|\bwhich category\b"
            r"|\bis (?:this|the following) (?:\w+ ){0,3}(?:spam|positive|negative|toxic|sarcastic)\b"
        ),
    ),
]
_ANY_KEY = re.compile("|".join(re.escape(k) for _, keys, _ in _ANYWHERE for k in keys))
_CLAUSE_START = [
    ("extraction", ("extract", "pull out", "find all", "list all the")),
    (
        "rewrite",
        (
            "rewrite",
            "re-write",
            "rephrase",
            "paraphrase",
            "translate",
            "proofread",
            "edit",
            "simplify",
            "shorten",
            "correct the grammar",
            "correct the spelling",
            "fix the grammar",
            "fix the spelling",
            "make this more",
            "make this less",
            "make it more",
            "make it less",
            "make it sound",
            "make this sound",
        ),
    ),
    (
        "brainstorming",
        (
            "brainstorm",
            "suggest",
            "come up with",
            "give me some ideas",
            "give me ideas",
            "give me some suggestions",
            "give me suggestions",
            "list some",
            "list of",
            "list ways",
            "list ideas",
            "list tips",
            "list reasons",
            r"list \d+ (?:ideas|ways|suggestions|names|reasons|tips)",
        ),
    ),
    (
        "generation",
        (
            "write",
            "compose",
            "create",
            "generate",
            "draft",
            "make up",
            "continue",
            "tell me a story",
            "tell me a joke",
            "tell me a poem",
            "act as",
            "act like",
            "pretend",
            "imagine",
            "you are a",
            "you are an",
            "you are now",
            "give me a",
            "give me an",
        ),
    ),
]
_OPENERS = ("please ", "can you ", "could you ", "would you ", "i want you to ", "i'd like you to ", "help me ", "now ")
# one pass over the text finds every clause-start keyword: a clause starts the text or follows
# . ! ? : ; or a newline, optionally after a polite opener; the keyword ends at a word boundary
_CLAUSES = re.compile(r"[.!?:;\n]")
_CLAUSE_RE = re.compile(
    r"\s*(?:"
    + "|".join(re.escape(o) for o in _OPENERS)
    + r")?(?:"
    + "|".join(
        f"(?P<{name}>" + "|".join(k if k.startswith("list \\d") else re.escape(k) for k in keys) + ")"
        for name, keys in _CLAUSE_START
    )
    + r")(?![\w-])"
)
_FORMS = re.compile(r"\b(?:a|an) (?:poem|story|essay|tweet|song|haiku|limerick|cover letter|speech|blog post)\b")
_IDEAS_FOR = re.compile(r"\bideas for\b")
_QUESTION = re.compile(
    r"^[\s.!?:;]*(?:" + "|".join(re.escape(o) for o in _OPENERS) + r")?"
    r"(?:what|who|whom|whose|when|where|why|how|which|is|are|was|were|can|could|"
    r"does|do|did|should|would|will|explain|describe|discuss|analy[sz]e|compare|differentiate|evaluate|tell me)\b"
)


def tag(prompt: PromptText, type: str = "plain") -> str:
    """The category of a prompt by the keyword rules above."""
    if type == "chat" or (isinstance(prompt, list) and sum(m["role"] == "user" for m in prompt) > 1):
        return "chat"
    if isinstance(prompt, list):
        prompt = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    text = prompt[:300].lower()
    if _ANY_KEY.search(text):
        for name, keys, pattern in _ANYWHERE:
            if any(k in text for k in keys) and pattern.search(text):
                return name
    match = _CLAUSE_RE.match
    found = {m.lastgroup for m in map(match, _CLAUSES.split(text)) if m}
    if "extraction" in found:
        return "extraction"
    if "rewrite" in found:
        return "rewrite"
    if "brainstorming" in found or ("ideas for" in text and _IDEAS_FOR.search(text)):
        return "brainstorming"
    if "generation" in found or _FORMS.search(text):
        return "generation"
    if "?" in text or _QUESTION.match(text):
        return "open_qa"
    return "other"
