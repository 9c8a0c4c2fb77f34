"""The viewer shows what the manifest says readers must know about the cluster names (e.g. that
random weights left caption words as the only source), and nothing when there is no such note."""
from __future__ import annotations

from tests.export_fixture import make_export
from tests.test_web_viewer import Page, browser  # noqa: F401
from tests.web_server import web_server  # noqa: F401

NOTE = "CLIP ran with random weights (--pretrained none): cluster names come from caption words alone"


def note_shown(browser, web_server, folder, labels):  # noqa: F811
    make_export(folder, rows=200, clusters=2, manifest_overrides={"labels": labels})
    page = Page(browser, web_server(folder)).open()
    try:
        el = page.page.locator("#labels-note")
        return el.is_visible(), el.text_content(), page.page_errors + page.console_errors
    finally:
        page.context.close()


def test_the_random_weights_note_is_visible_in_the_header(browser, web_server, tmp_path):  # noqa: F811
    visible, text, errors = note_shown(browser, web_server, tmp_path / "a", {"from": "caption words", "note": NOTE})
    assert visible and text == NOTE and errors == []


def test_without_a_note_nothing_is_shown(browser, web_server, tmp_path):  # noqa: F811
    visible, text, errors = note_shown(browser, web_server, tmp_path / "b", {"from": "concepts and caption words",
                                                                           "note": None})
    assert not visible and text == "" and errors == []
