"""Keep the answer out of the question (DESIGN.md §5): the emoticon scene evaluates which emoticon
a user sends, so the target message (x^t) and the conversation (y) must not show it.

Every emoticon of the scene's mapping table is removed wherever it occurs (not only as a whole
token: "hi:)" would leak as much as "hi :)"), longest first and until nothing changes (removing
":)" from "::))" leaves ":)"), and so is every emoji character (`emoji.replace_emoji`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import emoji

_SPACES = re.compile(r"\s+")


def strip_emoticons(text: str, emoticons: Iterable[str]) -> str:
    """`text` without any of `emoticons` or any emoji character, whitespace collapsed."""
    ordered = sorted({e for e in emoticons if e}, key=len, reverse=True)
    previous = None
    while text != previous:
        previous = text
        text = emoji.replace_emoji(text, replace=" ")
        for emoticon in ordered:
            text = text.replace(emoticon, " ")
    return _SPACES.sub(" ", text).strip()


def leaked_emoticons(text: str, emoticons: Iterable[str]) -> list[str]:
    """The emoticons of the table (and emoji characters) that `text` still contains."""
    found = [e for e in emoticons if e and e in text]
    return found + [m["emoji"] for m in emoji.emoji_list(text)]
