"""Use-case categories (InstructGPT's Table 1) by keyword rules.

A transparent baseline, not a classifier: the first rule that matches the first 300 characters of
the prompt (lower-cased) decides, in this order:

1. ``chat``: a conversation with more than one user turn (or a prompt of type ``chat``);
2. ``closed_qa``: a question about a given text ("based on the passage", "according to the text");
3. ``summarization``: "summarize", "tl;dr", "key points", "in a nutshell";
4. ``classification``: "classify", "categorize", "sentiment", "which category", "is this ... spam";
5. ``extraction``: "extract", "pull out", "list all the names/dates/...", "find all";
6. ``rewrite``: "rewrite", "rephrase", "paraphrase", "translate", "proofread", "correct the grammar";
7. ``brainstorming``: "brainstorm", "ideas for", "list of N ways/ideas", "suggest", "come up with";
8. ``generation``: "write", "compose", "create", "generate", "draft", "continue", "a
   poem/story/essay/tweet", role play ("act as", "pretend", "imagine", "you are a");
9. ``open_qa``: a question (starts with a question word or "explain/describe/discuss/analyze/
   compare", or holds a "?");
10. ``other``.

Rules 3-8 look for the keyword at the start of a sentence or clause, so "write" in "the
write-up I attached" does not make a generation prompt. A log's own category always wins.
"""

from __future__ import annotations

import re

from instructrl.records import PromptText

_START = r"(?:^|[.!?:;\n]\s*|\bplease\s+|\bcan you\s+|\bcould you\s+|\bi want you to\s+|\bhelp me\s+)"

RULES: list[tuple[str, re.Pattern]] = [
    ("closed_qa", re.compile(r"\b(?:based on|according to|using) the (?:above |following |given )?(?:text|passage|article|paragraph|context|document|story)\b|\banswer the (?:following )?question[s]? (?:based on|about|using|from) the\b")),
    ("summarization", re.compile(r"\bsummari[sz]e\b|\bsummary of\b|\btl;?dr\b|\bkey points\b|\bin a nutshell\b|\bmain points\b")),
    ("classification", re.compile(r"\bclassify\b|\bcategori[sz]e\b|\bsentiment\b|\bwhich category\b|\bis (?:this|the following) (?:\w+ ){0,3}(?:spam|positive|negative|toxic|sarcastic)\b")),
    ("extraction", re.compile(_START + r"(?:extract|pull out|find all|list all the (?:\w+ )?(?:names|dates|places|entities|numbers|emails|people|companies|keywords))\b")),
    ("rewrite", re.compile(_START + r"(?:rewrite|re-write|rephrase|paraphrase|translate|proofread|edit|simplify|shorten|correct the (?:grammar|spelling)|fix the (?:grammar|spelling)|make (?:this|it) (?:more|less|sound))\b")),
    ("brainstorming", re.compile(_START + r"(?:brainstorm|suggest|come up with|give me (?:some |\d+ )?(?:ideas|suggestions|names)|list (?:\d+ |some |of )?(?:ideas|ways|suggestions|names|reasons|tips))\b|\bideas for\b")),
    ("generation", re.compile(_START + r"(?:write|compose|create|generate|draft|make up|continue|tell me a (?:story|joke|poem)|act as|act like|pretend|imagine|you are (?:now )?(?:a|an)\b|give me an? (?!list)\w+)\b|\b(?:a|an) (?:poem|story|essay|tweet|song|haiku|limerick|cover letter|speech|blog post)\b")),
    ("open_qa", re.compile(r"^\s*(?:what|who|whom|whose|when|where|why|how|which|is|are|was|were|can|could|does|do|did|should|would|will|explain|describe|discuss|analy[sz]e|compare|differentiate|evaluate|tell me)\b|\?\s*$|\?\s")),
]


def tag(prompt: PromptText, type: str = "plain") -> str:
    """The category of a prompt by the keyword rules above."""
    if type == "chat" or (isinstance(prompt, list) and sum(m["role"] == "user" for m in prompt) > 1):
        return "chat"
    if isinstance(prompt, list):
        prompt = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    text = prompt[:300].lower()
    for name, pattern in RULES:
        if pattern.search(text):
            return name
    return "other"
