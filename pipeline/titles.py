"""The same-song level of dedupe: artist and title normalised into a key, and titles read from file names.

Apart from pipeline/dedupe.py (the content levels and the groups) so that acquire, which names local files by
their titles, depends on these rules alone."""
from __future__ import annotations

import re
import unicodedata

_VERSION = re.compile(r"(_v\d+|\.\d+|_\d{1,2}|\s*\(\d+\)|[\s_-]+copy|[\s_-]+v\d+)$", re.I)
# "CD2 - 13 - ", "01 - ", "7. ": disc and track numbers need a separator after them ("99 Problems" stays)
_TRACK_NO = re.compile(r"^(?:(?:cd|disc|disk)\s*\d+\s*-\s*)?(?:\d{1,3}\s*[-.]\s*)+", re.I)
_BRACKETS = re.compile(r"[\(\[][^\)\]]*[\)\]]")


def normalize(text: str | None) -> str:
    """Lower-case ASCII words: accents, punctuation, bracketed notes and 'the' prefixes removed."""
    if not text:
        return ""
    t = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    t = _BRACKETS.sub(" ", t).lower().replace("&", " and ").replace("'", "")
    t = re.sub(r"[^a-z0-9]+", " ", t)
    t = re.sub(r"\s+", " ", t).strip()
    return t[4:] if t.startswith("the ") else t


def title_from_filename(name: str) -> str:
    """'01_-_A_Hard_Day's_Night_v0.mid' -> "A Hard Day's Night": track numbers and version suffixes dropped."""
    stem = name.rsplit("/", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    for _ in range(2):
        stem = _VERSION.sub("", stem)
    return _TRACK_NO.sub("", stem.replace("_", " ").strip()).strip(" -")


def song_key(artist: str | None, title: str | None) -> str | None:
    """The same-song key; None when there is no title to go by."""
    t = normalize(title)
    return f"{normalize(artist)}|{t}" if t else None
