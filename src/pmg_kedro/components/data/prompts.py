"""Keyword prompts of paper §3.2.2 and the parsing of LLM answers into keywords.

A preference prompt is principle p + one attribute a_i + examples e + behavior x (+ conversation y);
the answers of all attributes are parsed, merged, de-duplicated and cut to K_p. The target prompt
is p + e + the target's text x^t, cut to K_t and put after the scene's fixed prefix. Every template
and word list comes from parameters; this module only fills and parses.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

# Words that carry no preference on their own; answers often end with them ("... and more").
FILLER = frozenset(
    {
        "none",
        "n/a",
        "na",
        "unknown",
        "etc",
        "others",
        "other",
        "more",
        "and more",
        "various",
        "keyword",
        "keywords",
        "answer",
        "example",
        "examples",
        "user",
        "the user",
        "sorry",
    }
)
_STOPWORDS_TEXT = """
a an the and or but so to of in on at for with from by as is are was were be been am i you he she
it we they me my your his her its our their this that these those what which who how why when where
do does did not no yes just really very too can could would should will have has had about into up
out if then than there here all any some im it's i'm don't dont that's thats lol ok okay oh yeah
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

_ITEM_MARKER = re.compile(r"^\s*(?:[-*•·+>]+|\(?\d{1,2}[.):]|\(?[a-zA-Z][.)])\s+")
_SEPARATORS = re.compile(r"[,;|/\n]|\s+-\s+|(?<=[.!?])\s+")
_CONJUNCTIONS = re.compile(r"\s+(?:and|or|&)\s+")
_BRACKETED = re.compile(r"\([^)]*\)|\[[^\]]*\]|\{[^}]*\}")
_MARKUP = re.compile(r"[*_`#]+")
_LEADING_ARTICLE = re.compile(r"^(?:the|a|an)\s+")
_EDGE_PUNCTUATION = string.punctuation.replace("+", "") + "“”‘’«»…–—"


def render(template: str, **fields) -> str:
    """`str.format` with an error that names the missing field and the template."""
    try:
        return template.format(**fields)
    except KeyError as err:
        raise KeyError(
            f"prompt template field {err} has no value; available {sorted(fields)}; "
            f"template: {template[:80]!r}"
        ) from None


def format_behavior(texts: Sequence[str], line_template: str = "- {text}") -> str:
    """The behavior texts x_1..x_n (oldest first), one line each."""
    return "\n".join(render(line_template, text=t, index=i + 1) for i, t in enumerate(texts))


def preference_prompt(
    template: str,
    *,
    principle: str,
    attribute: str,
    examples: str,
    history: str,
    conversation: str = "",
    conversation_template: str = "",
    n_keywords: int,
) -> str:
    """Prompt for one attribute a_i (§3.2.2): k_i^p = LLM_g(p, a_i, e, x, y)."""
    conversation_text = (
        render(conversation_template, conversation=conversation) if conversation else ""
    )
    return render(
        template,
        principle=principle,
        attribute=attribute,
        examples=examples,
        history=history,
        conversation=conversation_text,
        n_keywords=n_keywords,
    ).strip()


def target_prompt(
    template: str, *, principle: str, examples: str, target: str, n_keywords: int
) -> str:
    """Prompt for the target keywords (§3.2.2): k^t = LLM_g(p, e, x^t)."""
    return render(
        template, principle=principle, examples=examples, target=target, n_keywords=n_keywords
    ).strip()


def keyword_key(keyword: str) -> str:
    """Comparison key of a keyword: lower case, letters and digits only, naive singular.

    "Sci-Fi", "sci fi" and "Comedies"/"comedy" are the same keyword for de-duplication; the
    first spelling seen is the one kept.
    """
    words = re.sub(r"[^0-9a-z]+", " ", keyword.lower()).split()
    singular = []
    for w in words:
        if len(w) > 4 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
        singular.append(w)
    return "".join(singular)


def _clean(chunk: str) -> str:
    chunk = _BRACKETED.sub(" ", chunk)
    chunk = _MARKUP.sub("", chunk)
    chunk = chunk.strip().strip(_EDGE_PUNCTUATION + " ").lower()
    chunk = _LEADING_ARTICLE.sub("", chunk)
    return " ".join(chunk.split())


def _strip_label(line: str, labels: frozenset[str]) -> str:
    """Drop a leading "Genre:" / "Keywords:" / "Here are the keywords:" label from one line."""
    head, sep, tail = line.partition(":")
    if not sep:
        return line
    head_words = set(re.sub(r"[^a-z ]+", " ", head.lower()).split())
    if len(head.split()) == 1 or (len(head.split()) <= 6 and head_words & labels):
        return tail
    return line


def parse_keywords(
    answer: str,
    *,
    max_words: int = 4,
    labels: Iterable[str] = (),
    complete: bool = True,
) -> list[str]:
    """Keywords from one LLM answer: numbered/bulleted lists, commas, semicolons, new lines.

    Chunks are cleaned (markup, brackets, edge punctuation, leading articles, lower case) and
    de-duplicated by `keyword_key`. Chunks longer than `max_words` words are sentences, not
    keywords, and are dropped whole; short ones are split at "and"/"or" ("comedy and drama").
    Fillers ("none", "etc") and echoes of the question are dropped too: a keyword made only of
    words of `labels` (the attribute, its description, the instructions: "visual style" for "the
    visual style and mood") repeats the question instead of answering it.
    `complete=False` (the answer hit max_new_tokens) drops the last chunk: it may be cut mid-word.
    """
    if not answer or not answer.strip():
        return []
    label_words = {w for label in labels for w in re.sub(r"[^a-z ]+", " ", label.lower()).split()}
    label_words |= {"keyword", "keywords", "answer", "here"}
    lines = [_ITEM_MARKER.sub("", line) for line in answer.splitlines()]
    lines = [_strip_label(line, frozenset(label_words)) for line in lines]
    chunks = _SEPARATORS.split("\n".join(lines))
    if not complete and chunks:
        chunks = chunks[:-1]
    chunks = [
        part
        for chunk in chunks
        for part in ([chunk] if len(chunk.split()) > max_words else _CONJUNCTIONS.split(chunk))
    ]
    echo_words = {keyword_key(w) for w in label_words} - {""}
    keywords: list[str] = []
    seen: set[str] = set()
    for chunk in chunks:
        keyword = _ITEM_MARKER.sub("", _clean(chunk))
        key = keyword_key(keyword)
        if (
            not key
            or keyword in FILLER
            or {keyword_key(w) for w in keyword.split()} <= echo_words
            or len(keyword.split()) > max_words
            or key in seen
        ):
            continue
        seen.add(key)
        keywords.append(keyword)
    return keywords


def merge_keywords(
    per_attribute: Sequence[Sequence[str]], k: int, per_attribute_max: int
) -> list[str]:
    """Merge the attributes' keywords (§3.2.2: combine, remove duplicates), cut to `k` (K_p).

    Round robin over the attributes (first keyword of each attribute, then the second...), so a
    cut at K_p keeps every attribute that answered instead of only the first ones asked; at most
    `per_attribute_max` keywords come from one attribute.
    """
    merged: list[str] = []
    seen: set[str] = set()
    lists = [list(words)[:per_attribute_max] for words in per_attribute]
    for rank in range(max((len(w) for w in lists), default=0)):
        for words in lists:
            if rank < len(words) and keyword_key(words[rank]) not in seen:
                seen.add(keyword_key(words[rank]))
                merged.append(words[rank])
    return merged[:k]


def target_condition(prefix: Sequence[str], keywords: Sequence[str], k: int) -> list[str]:
    """The target condition k^t: the scene's fixed prefix, then up to `k` (K_t) keywords.

    The authors' movie condition is ["movie poster", title] + keywords[:5]; keywords that repeat
    a prefix entry are skipped, so the prefix is not spent twice.
    """
    seen = {keyword_key(p) for p in prefix}
    extra = [w for w in keywords if keyword_key(w) not in seen][:k]
    return [*prefix, *extra]


def most_frequent(values: Iterable[str], n: int) -> list[str]:
    """The `n` most frequent values; ties go to the value seen first (deterministic)."""
    counts = Counter(
        values
    )  # insertion-ordered, and `sorted` is stable: ties keep first-seen order
    return sorted(counts, key=lambda v: -counts[v])[:n]


def content_words(text: str, n: int) -> list[str]:
    """Up to `n` distinct content words of a text (no stop words, no emoticons), in order."""
    words = re.findall(r"[a-z][a-z'-]{2,}", text.lower())
    out: list[str] = []
    for w in words:
        if w not in STOPWORDS and w not in FILLER and w not in out:
            out.append(w)
    return out[:n]


def field_text(value) -> str:
    """A metadata value as prompt text: lists joined with commas, missing as empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        raise TypeError(f"expected a scalar or a list, got a mapping {value!r}")
    if hasattr(value, "__iter__"):
        return ", ".join(str(v) for v in value)
    return "" if value is None or value != value else str(value)
