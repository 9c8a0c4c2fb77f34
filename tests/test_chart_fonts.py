"""The PNG charts draw words in scripts DejaVu Sans lacks (a Tokyo or Seoul run's kanji, kana and
Hangul) with an installed font that has them, and name once the characters no font has."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from common import chart_fonts, reports
from tests.conftest import missing

CJK_WORDS = ["東京", "渋谷", "서울", "とうきょう"]


def label_pixels(path) -> np.ndarray:
    """The chart's label column (left of the axes, which start at 33% of its width), as grey levels."""
    image = np.asarray(Image.open(path).convert("L"))
    column = image[:, : int(image.shape[1] * 0.33) - 2]
    assert column.min() < 128, "no label drawn at all"
    return column


def chart(tmp_path, *words: str):
    path = tmp_path / f"{'-'.join(str(ord(w[0])) for w in words)}.png"
    reports.bar_chart(list(words), [1] * len(words), "words", "captions", path)
    return label_pixels(path)


@pytest.fixture
def cjk_font():
    fonts, lacking = chart_fonts.families("".join(CJK_WORDS))
    if lacking:
        missing("a font with CJK and Hangul glyphs (Debian: apt-get install fonts-wqy-microhei or fonts-noto-cjk)")
    return fonts


def test_cjk_and_hangul_words_take_a_font_that_has_them(cjk_font, tmp_path, capsys, recwarn):
    assert cjk_font[0] == chart_fonts.BASE and len(cjk_font) >= 2
    drawn = [chart(tmp_path, w) for w in ("東", "京", "서")]
    # a missing glyph is the same empty box whatever the character: three different glyphs drawn
    assert not np.array_equal(drawn[0], drawn[1]) and not np.array_equal(drawn[1], drawn[2])
    assert "no installed font" not in capsys.readouterr().err
    assert not [w for w in recwarn if "missing from font" in str(w.message)]


def test_latin_words_keep_the_default_font_alone():
    assert chart_fonts.families("Lisboa café Zürich São Paulo") == ([chart_fonts.BASE], "")


def test_characters_no_font_has_are_named_once_and_the_chart_is_still_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(chart_fonts, "_candidates", lambda: ())  # a machine with DejaVu Sans alone
    monkeypatch.setattr(chart_fonts, "_named", set())
    chart(tmp_path, "東", "京")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(京 東)" in err[0] and "fonts-noto-cjk" in err[0]
    a, b = chart(tmp_path, "東"), chart(tmp_path, "京")
    assert np.array_equal(a, b)  # both drawn as the same box: what the message warned of
    assert capsys.readouterr().err == ""  # said once per run, not per chart or per glyph


def test_fonts_that_draw_placeholders_are_never_chosen():
    from matplotlib import font_manager

    # matplotlib ships Last Resort, which claims every character and draws a box for each
    assert any(e.name.startswith("Last Resort") for e in font_manager.fontManager.ttflist)
    assert not [name for name, _ in chart_fonts._candidates() if name.startswith(chart_fonts.NOT_FALLBACKS)]
    assert "Last Resort" not in " ".join(chart_fonts.families("\u0e01\u0e23")[0])  # Thai: a real font or none


def test_a_broken_font_file_among_the_installed_ones_is_left_out(tmp_path, monkeypatch):
    from matplotlib import font_manager

    broken = tmp_path / "Broken-Regular.ttf"
    broken.write_bytes(b"\x00\x01\x00\x00 not really a font")
    real = font_manager.findSystemFonts()
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda *a, **k: [*real, str(broken)])
    chart_fonts._candidates.cache_clear()
    try:
        fonts, lacking = chart_fonts.families("東京 กรุงเทพ")  # a search through every font, the broken one too
        assert fonts[0] == chart_fonts.BASE
        assert chart_fonts._charmap(str(broken)) == frozenset()
    finally:
        chart_fonts._candidates.cache_clear()
