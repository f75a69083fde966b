"""Helpers the dataset readers share: a JSON-object reader and the repair of HTML entities in crawled text."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from seawall.errors import DataError

HTML_ENTITIES = "html entities"
# Reddit text is escaped twice (`&amp;nbsp;`), so unescaping runs until the text stops changing (at most 3 times).
_MAX_UNESCAPE = 3
# A no-break space from `&nbsp;` is a plain space to every tokenizer; zero-width spaces carry nothing.
_INVISIBLE = str.maketrans({"\xa0": " ", "\u200b": None})


def unescape_html(text: str) -> tuple[str, bool]:
    """The text with HTML entities (also doubly escaped ones) decoded; True when anything changed."""
    original = text
    for _ in range(_MAX_UNESCAPE):
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = decoded
    if text != original:
        text = text.translate(_INVISIBLE)
    return text, text != original


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding one object; a missing, undecodable or malformed file is a DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: invalid JSON at line {error.lineno} ({error.msg})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value
