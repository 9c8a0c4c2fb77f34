"""Fonts for the charts' words: DejaVu Sans, then installed fonts that have the glyphs it lacks.

A Tokyo or Seoul run charts words in kanji, kana and Hangul, which DejaVu Sans (matplotlib's
default) does not have: alone, it draws each as the same empty box. `families(text)` returns
DejaVu Sans followed by the installed fonts that cover what it lacks (matplotlib draws each glyph
from the first family in the list that has it), preferring the usual wide-coverage fonts (Noto,
Source Han, WenQuanYi, Droid Sans Fallback). Characters no installed font has are returned too,
so the caller can say which ones will show as boxes, once, instead of matplotlib's warning per glyph.

Fonts installed after matplotlib built its font cache are found as well: when a glyph is missing,
the system's font folders are scanned once per process.
"""
from __future__ import annotations

import re
import sys
from functools import lru_cache

BASE = "DejaVu Sans"
# wide-coverage families tried first, in this order (a name matches by prefix)
PREFERRED = ("Noto Sans CJK", "Noto Sans", "Source Han Sans", "WenQuanYi", "Droid Sans Fallback", "Arial Unicode",
             "Unifont")
# fonts that claim every character but draw a placeholder (Last Resort), or colour bitmaps Agg cannot draw
NOT_FALLBACKS = ("Last Resort", "Noto Color Emoji", "Apple Color Emoji", "Segoe UI Emoji")
INSTALL_HINT = "install a font that has them, e.g. Noto CJK for Chinese, Japanese and Korean " \
               "(Debian/Ubuntu: apt-get install fonts-noto-cjk)"


@lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except Exception:  # noqa: BLE001 - an unreadable or odd font file must never stop a chart
        return frozenset()


@lru_cache(maxsize=1)
def _candidates() -> tuple[tuple[str, str], ...]:
    """(family, file) of every installed upright font: preferred families first, regular weights
    before the others."""
    from matplotlib import font_manager as fm

    known = {entry.fname for entry in fm.fontManager.ttflist}
    for path in fm.findSystemFonts():  # installed since matplotlib's cache was built
        if path not in known and path.lower().endswith((".ttf", ".otf", ".ttc")):
            try:
                fm.fontManager.addfont(path)
            except Exception:  # noqa: BLE001 - a font matplotlib cannot read is left out
                pass
    fonts = {(e.name, e.fname, e.weight in (400, "normal", "regular")) for e in fm.fontManager.ttflist
             if e.style == "normal" and e.name != BASE and not e.name.startswith(NOT_FALLBACKS)}

    def rank(font: tuple[str, str, bool]) -> tuple[int, bool, str, str]:
        order = next((i for i, p in enumerate(PREFERRED) if font[0].startswith(p)), len(PREFERRED))
        return order, not font[2], font[0], font[1]

    return tuple((name, path) for name, path, _ in sorted(fonts, key=rank))


def _base_file() -> str:
    from matplotlib import font_manager as fm

    return fm.findfont(fm.FontProperties(family=BASE))


_INVISIBLE = re.compile(r"[\s\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufe00-\ufe0f\ufeff]")


def families(text: str) -> tuple[list[str], str]:
    """(font families to draw `text` with, BASE first; the characters no installed font has)."""
    need = {c for c in set(_INVISIBLE.sub("", text)) if ord(c) not in _charmap(_base_file())}
    chosen = [BASE]
    if not need:
        return chosen, ""
    for name, path in _candidates():
        if name in chosen:
            continue
        cover = {c for c in need if ord(c) in _charmap(path)}
        if cover:
            chosen.append(name)
            need -= cover
            if not need:
                break
    return chosen, "".join(sorted(need))


_named: set[str] = set()  # characters already named in this run


def say_missing(missing: str) -> None:
    """Name, on stderr, the characters of `missing` not named before in this run."""
    new = "".join(c for c in missing if c not in _named)
    if not new:
        return
    _named.update(new)
    shown = " ".join(new[:20]) + (" ..." if len(new) > 20 else "")
    print(f"charts: no installed font has {len(new)} character(s) of these words ({shown}): they show as boxes "
          f"in the PNG charts, the CSV files have them; {INSTALL_HINT}", file=sys.stderr)
