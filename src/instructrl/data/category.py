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
    ("closed_qa", ("based on the", "according to the", "using the", "answer the"), re.compile(r"\b(?:based on|according to|using) the (?:above |following |given )?(?:text|passage|article|paragraph|context|document|story)\b|\banswer the (?:following )?questions? (?:based on|about|using|from) the\b")),
    ("summarization", ("summar", "tl;dr", "tldr", "key points", "nutshell", "main points"), re.compile(r"\bsummari[sz]e|\bsummary of\b|\btl;?dr\b|\bkey points\b|\bin a nutshell\b|\bmain points\b")),
    ("classification", ("classif", "categori", "sentiment", "which category", "is this", "is the following"), re.compile(r"\bclassify\b|\bcategori[sz]e\b|\bsentiment\b|\bwhich category\b|\bis (?:this|the following) (?:\w+ ){0,3}(?:spam|positive|negative|toxic|sarcastic)\b")),
]
_CLAUSE_START = [
    ("extraction", ("extract", "pull out", "find all", "list all the")),
    ("rewrite", ("rewrite", "re-write", "rephrase", "paraphrase", "translate", "proofread", "edit", "simplify", "shorten",
                 "correct the grammar", "correct the spelling", "fix the grammar", "fix the spelling", "make this more",
                 "make this less", "make it more", "make it less", "make it sound", "make this sound")),
    ("brainstorming", ("brainstorm", "suggest", "come up with", "give me some ideas", "give me ideas", "give me some suggestions",
                       "give me suggestions", "list some", "list of", "list ways", "list ideas", "list tips", "list reasons")),
    ("generation", ("write", "compose", "create", "generate", "draft", "make up", "continue", "tell me a story", "tell me a joke",
                    "tell me a poem", "act as", "act like", "pretend", "imagine", "you are a", "you are an", "you are now",
                    "give me a", "give me an")),
]
_LIST_N = re.compile(r"^list \d+ (?:ideas|ways|suggestions|names|reasons|tips)\b")
_FORMS = re.compile(r"\b(?:a|an) (?:poem|story|essay|tweet|song|haiku|limerick|cover letter|speech|blog post)\b")
_IDEAS_FOR = re.compile(r"\bideas for\b")
_CLAUSES = re.compile(r"[.!?:;\n]+")
_OPENERS = ("please ", "can you ", "could you ", "would you ", "i want you to ", "i'd like you to ", "help me ", "now ")
_QUESTION = ("what", "who", "whom", "whose", "when", "where", "why", "how", "which", "is", "are", "was", "were", "can", "could",
             "does", "do", "did", "should", "would", "will", "explain", "describe", "discuss", "analyze", "analyse", "compare",
             "differentiate", "evaluate", "tell me")


def _starts(clause: str, prefixes: tuple[str, ...]) -> bool:
    if not clause.startswith(prefixes):  # one C-level test; the word boundary only when it matched
        return False
    for p in prefixes:
        if clause.startswith(p) and (len(clause) == len(p) or not clause[len(p)].isalnum() and clause[len(p)] != "-"):
            return True
    return False


def tag(prompt: PromptText, type: str = "plain") -> str:
    """The category of a prompt by the keyword rules above."""
    if type == "chat" or (isinstance(prompt, list) and sum(m["role"] == "user" for m in prompt) > 1):
        return "chat"
    if isinstance(prompt, list):
        prompt = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    text = prompt[:300].lower()
    for name, keys, pattern in _ANYWHERE:
        if any(k in text for k in keys) and pattern.search(text):
            return name
    clauses = []
    for c in _CLAUSES.split(text):
        c = c.strip()
        for opener in _OPENERS:
            if c.startswith(opener):
                c = c[len(opener):]
                break
        if c:
            clauses.append(c)
    for name, prefixes in _CLAUSE_START:
        if any(_starts(c, prefixes) for c in clauses):
            return name
        if name == "brainstorming" and (any(_LIST_N.match(c) for c in clauses) or _IDEAS_FOR.search(text)):
            return name
        if name == "generation" and _FORMS.search(text):
            return name
    first = clauses[0] if clauses else ""
    if "?" in text or _starts(first, _QUESTION):
        return "open_qa"
    return "other"
