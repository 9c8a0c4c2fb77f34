"""The Miro client pieces of step 08: the image upload workaround, paging, the credit gate, the plan."""
from __future__ import annotations

import json
import time

import pytest
import urllib3
from miro_api import MiroApi
from miro_api.configuration import Configuration
from miro_api.models.fixed_ratio_geometry import FixedRatioGeometry
from miro_api.models.position_change import PositionChange
from miro_api.models.upload_file_from_device_data import UploadFileFromDeviceData
from miro_api.rest import RESTClientObject
from PIL import Image

from common.cli import UserError
from common.miro.client import MAX_WAIT, CreditGate, MiroBoard, check_api_url, image_upload_request, plain_text
from common.miro.plan import Layout, board_id, choose_level, label_items, text_height
from tests import miro_server as server
from tests.miro_server import BOARD, OUTSIDE_PARENT, TOKEN
from tests.miro_server import miro_server  # noqa: F401


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "0123456789abcdef.jpg"
    Image.new("RGB", (40, 20), (200, 30, 30)).save(path)
    return path


def _data(**kw) -> UploadFileFromDeviceData:
    return UploadFileFromDeviceData(title="t", position=PositionChange(x=12.5, y=-40),
                                    geometry=FixedRatioGeometry(width=150), **kw)


def test_official_upload_with_data_still_fails_as_reported(miro_server, picture):
    """The trap the workaround exists for: miro-api hands the `data` part to urllib3 as a dict."""
    api = MiroApi(TOKEN)
    config = Configuration(host=miro_server.url)    # not the shared default configuration
    api.api_client.configuration, api.api_client.rest_client = config, RESTClientObject(config)
    with pytest.raises(TypeError, match="bytes-like object is required, not 'dict'"):
        api.create_image_item_using_local_file(BOARD, str(picture), data=_data())
    assert miro_server.state.items() == []


def test_image_request_carries_data_as_one_json_file_part(picture):
    method, url, headers, body, parts = image_upload_request(MiroApi(TOKEN), BOARD, picture, _data())
    assert (method, body) == ("POST", None) and url.endswith("/v2/boards/uXjVTestBoard1%3D/images")
    assert headers["Content-Type"] == "multipart/form-data"
    assert [name for name, _ in parts] == ["data", "resource"]
    filename, payload, ctype = dict(parts)["data"]
    assert (filename, ctype) == ("data.json", "application/json")
    assert json.loads(payload) == {"title": "t", "position": {"x": 12.5, "y": -40}, "geometry": {"width": 150}}
    assert dict(parts)["resource"] == (picture.name, picture.read_bytes(), "image/jpeg")


def test_one_upload_places_the_image_at_its_position_and_width(miro_server, picture):
    board = MiroBoard(TOKEN, BOARD, miro_server.url)
    item_id = board.create_image(picture, "Plaza [cie 0badcafe cell:1,2]", 12.5, -40, 150)
    (item,) = miro_server.state.items()
    assert item["id"] == item_id and item_id.isdigit()
    assert item["position"]["x"] == 12.5 and item["position"]["y"] == -40
    assert item["geometry"] == {"width": 150, "height": 75.0}
    assert item["data"]["title"] == "Plaza [cie 0badcafe cell:1,2]"
    assert miro_server.state.count("POST") == 1


def test_server_refuses_a_data_part_that_is_not_typed_json(miro_server, picture):
    http = urllib3.PoolManager()
    r = http.request("POST", f"{miro_server.url}/v2/boards/{BOARD}/images",
                     headers={"Authorization": f"Bearer {TOKEN}"},
                     fields=[("data", '{"title": "x"}'), ("resource", (picture.name, picture.read_bytes(), "image/jpeg"))])
    assert r.status == 400 and "application/json" in json.loads(r.data)["message"]
    assert miro_server.state.items() == []


def test_listing_pages_through_the_board_with_a_string_limit_and_a_cursor(miro_server):
    for k in range(120):
        miro_server.state.add_by_hand(type="sticky_note", data={"content": f"note {k}"})
    items = list(MiroBoard(TOKEN, BOARD, miro_server.url).items())
    assert [it.text for it in items] == [f"note {k}" for k in range(120)]
    assert miro_server.state.count("GET", 200) == 3
    http = urllib3.PoolManager()
    r = http.request("GET", f"{miro_server.url}/v2/boards/{BOARD}/items?limit=60",
                     headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 400


def test_deleting_an_item_already_gone_is_not_an_error(miro_server):
    note = miro_server.state.add_by_hand(data={"content": "x"})
    board = MiroBoard(TOKEN, BOARD, miro_server.url)
    assert board.delete(note) is True and board.delete(note) is False


def test_gate_waits_for_the_reset_when_the_window_is_spent():
    gate = CreditGate()
    reset = time.time() + 0.3
    gate.observe({"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "150", "X-RateLimit-Reset": f"{reset:.3f}"})
    t0 = time.time()
    gate.acquire(100)
    assert time.time() - t0 < 0.1
    gate.acquire(100)              # 50 left: must wait for the refill
    assert time.time() >= reset and gate.waited > 0.2
    assert gate.remaining == 900


def test_gate_never_waits_forever_when_no_reset_is_known():
    gate = CreditGate(remaining=50, limit=1000)
    t0 = time.time()
    gate.acquire(100)
    assert time.time() - t0 < 0.1


def test_gate_follows_windows_shorter_than_a_second():
    gate = CreditGate()
    now = time.time()
    gate.observe({"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": f"{now + 0.1:.3f}"})
    gate.acquire(100)                       # waits for the refill at now + 0.1
    gate.observe({"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": f"{now + 0.1:.3f}"})
    assert gate.remaining == 100            # a late answer from the old window changes nothing
    gate.observe({"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "50", "X-RateLimit-Reset": f"{now + 0.4:.3f}"})
    assert gate.remaining == 50 and gate.reset_at == pytest.approx(now + 0.4)


def test_gate_after_a_429_waits_until_the_named_reset():
    gate = CreditGate()
    wait = gate.blocked({"X-RateLimit-Reset": f"{time.time() + 0.2:.3f}"})
    assert 0.1 < wait <= 0.21 and gate.remaining == 0 and gate.rate_limited == 1


def test_server_answers_429_with_rate_limit_headers_when_credits_run_out(miro_server):
    miro_server.state.budget = 120
    http = urllib3.PoolManager()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    first = http.request("GET", f"{miro_server.url}/v2/boards/{BOARD}", headers=auth)
    second = http.request("GET", f"{miro_server.url}/v2/boards/{BOARD}/items?limit=10", headers=auth)
    assert first.status == 200 and first.headers["X-RateLimit-Remaining"] == "70"
    assert second.status == 429 and float(second.headers["X-RateLimit-Reset"]) > time.time()
    assert json.loads(second.data)["code"] == "tooManyRequests"


@pytest.mark.parametrize("value", ["uXjVOabc123=", "https://miro.com/app/board/uXjVOabc123=/",
                                   "https://miro.com/app/board/uXjVOabc123%3D/?share_link_id=42"])
def test_board_is_read_from_an_id_or_a_url(value):
    assert board_id(value) == "uXjVOabc123="


@pytest.mark.parametrize("value", ["../../etc", "uX jV", "https://miro.com/app/dashboard/"])
def test_board_that_is_neither_id_nor_url_is_refused(value):
    with pytest.raises(UserError, match="is not a Miro board id or board URL"):
        board_id(value)


def test_level_choice_is_the_coarsest_grid_with_enough_cells_for_the_limit():
    counts = {64: 900, 128: 2500, 256: 6000}
    assert choose_level([64, 128, 256], counts, None, None) == 64
    assert choose_level([64, 128, 256], counts, 10, None) == 64
    assert choose_level([64, 128, 256], counts, 900, None) == 64
    assert choose_level([64, 128, 256], counts, 3000, None) == 256
    assert choose_level([64, 128, 256], counts, 99_999, None) == 256
    assert choose_level([64, 128, 256], counts, 10, 128) == 128
    with pytest.raises(UserError, match="--level 32 is not in the export"):
        choose_level([64, 128, 256], counts, None, 32)


def test_image_size_grows_with_the_square_root_of_density_down_to_the_minimum():
    lay = Layout(level=64, spacing=440, base_width=400, min_width=100, frame=False)
    assert lay.size(100, 100) == 400
    assert lay.size(25, 100) == pytest.approx(200)
    assert lay.size(1, 100) == 100
    assert lay.point(32, 32) == (0.0, 0.0)


# ---------------------------------------------------------------------------- rate-limit waits: at most one window
class FakeClock:
    """time.time and time.sleep for a CreditGate: sleeping advances the clock, and nothing really waits."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now, self.sleeps = start, []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("reset, expected_wait", [
    (lambda now: f"{now + 30:.3f}", 30),                    # as Miro documents it: UNIX seconds
    (lambda now: str(int((now + 30) * 1000)), 30),          # milliseconds since the epoch
    (lambda now: "30", 30),                                 # seconds from now
    (lambda now: str(int(now + 3 * 3600)), MAX_WAIT),       # three hours away: never waited in one go
    (lambda now: "1e15", MAX_WAIT),                         # nonsense
], ids=["unix_seconds", "unix_milliseconds", "seconds_from_now", "hours_away", "nonsense"])
def test_gate_waits_for_the_reset_it_can_read_and_never_longer_than_one_window(reset, expected_wait):
    clock = FakeClock()
    gate = CreditGate(clock=clock.time, sleep=clock.sleep)
    gate.observe({"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset(clock.now)})
    gate.acquire(100)
    assert len(clock.sleeps) == 1 and clock.sleeps[0] == pytest.approx(expected_wait, abs=1.05)
    assert MAX_WAIT <= 61 and max(clock.sleeps) <= MAX_WAIT + 0.05


def test_gate_facing_a_reset_hours_away_waits_one_window_at_a_time_and_asks_again():
    clock = FakeClock()
    gate = CreditGate(clock=clock.time, sleep=clock.sleep)
    far = str(int(clock.now + 5 * 3600))
    for _ in range(3):                     # each answer still says: nothing left until `far`
        gate.observe({"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": far})
        gate.acquire(100)
    assert len(clock.sleeps) == 3 and max(clock.sleeps) <= MAX_WAIT + 0.05
    assert gate.waited == pytest.approx(sum(clock.sleeps), abs=0.1)


@pytest.mark.parametrize("headers", [
    {"X-RateLimit-Reset": str(int((1_800_000_000 + 7200) * 1000))},
    {"X-RateLimit-Reset": str(1_800_000_000 + 86400)},
    {"Retry-After": "86400"},
    {"X-RateLimit-Reset": "nan", "Retry-After": "inf"},
])
def test_a_429_never_asks_for_a_wait_longer_than_one_window(headers):
    clock = FakeClock()
    gate = CreditGate(clock=clock.time, sleep=clock.sleep)
    assert 0 < gate.blocked(headers) <= MAX_WAIT and gate.rate_limited == 1


@pytest.mark.parametrize("reset_format, longest", [("epoch", 0.6), ("epoch_ms", 0.6), ("seconds_left", 1.1)])
def test_429_from_the_api_waits_until_its_reset_whatever_unit_the_header_uses(miro_server, reset_format, longest):
    state = miro_server.state
    state.window, state.storm, state.reset_format = 0.5, 1, reset_format
    clock = FakeClock(start=time.time())
    board = MiroBoard(TOKEN, BOARD, miro_server.url, gate=CreditGate(clock=clock.time, sleep=clock.sleep))
    board.create_text("after one 429", 100, 100, 200, 14)
    assert state.count("POST", 429) == 1 and len(state.items(type="text")) == 1
    assert clock.sleeps and max(clock.sleeps) <= longest


# ---------------------------------------------------------------------------- frame bounds and HTML, as Miro has them
def test_server_refuses_a_child_sticking_out_of_its_frame_with_miros_error_body(miro_server, picture):
    board = MiroBoard(TOKEN, BOARD, miro_server.url)
    frame = board.create_frame("f", 0, 0, 1000, 800)
    assert board.create_image(picture, "inside", 50, 25, 100, frame)          # 100 x 50: touches the corner
    for make in (lambda: board.create_image(picture, "out", 49, 25, 100, frame),
                 lambda: board.create_image(picture, "out", 500, 790, 100, frame),
                 lambda: board.create_text("wide label", 200, 400, 600, 40, frame)):
        with pytest.raises(UserError, match="outside its frame .*--replace"):
            make()
    http = urllib3.PoolManager()
    r = http.request("POST", f"{miro_server.url}/v2/boards/{BOARD}/texts",
                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                     body=json.dumps({"data": {"content": "x"}, "position": {"x": 0, "y": 0},
                                      "parent": {"id": frame}}))
    assert r.status == 400 and json.loads(r.data) == {"type": "error", "code": "invalidParameters", "context": None,
                                                      "message": OUTSIDE_PARENT, "status": 400}
    assert len(miro_server.state.items()) == 2 and miro_server.state.outside_their_frame() == []


@pytest.mark.parametrize("sent, stored", [
    ("Plaza Mayor", "<p>Plaza Mayor</p>"),
    ("R&D <b>lab</b>", "<p>R&amp;D <b>lab</b></p>"),
    ("R&amp;D &lt;lab&gt;", "<p>R&amp;D &lt;lab&gt;</p>"),
    ("<p>already html</p>", "<p>already html</p>"),
])
def test_server_stores_text_content_as_miro_does(miro_server, sent, stored):
    http = urllib3.PoolManager()
    r = http.request("POST", f"{miro_server.url}/v2/boards/{BOARD}/texts",
                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                     body=json.dumps({"data": {"content": sent}}))
    assert r.status == 201 and json.loads(r.data)["data"]["content"] == stored
    assert miro_server.state.items(type="text")[0]["data"]["content"] == stored


@pytest.mark.parametrize("label", ["Plaza Mayor", "R&D <lab>", "a  b\tc", "&amp; is not &", "Gran Vía"])
def test_a_label_is_read_back_from_the_board_as_it_was_planned(miro_server, label):
    board = MiroBoard(TOKEN, BOARD, miro_server.url)
    board.create_text(label, 0, 0, 300, 20)
    (item,) = board.items()
    assert item.text == " ".join(label.split())
    assert plain_text("<p>a</p><p>b &amp;&nbsp;c</p>") == "a b & c"


# ---------------------------------------------------------------------------- the plan keeps every box in the frame
@pytest.mark.parametrize("spacing, base_width", [(440, 400), (300, 400), (100, 400), (40, 400), (2000, 400)])
def test_every_planned_box_lies_within_the_frame(spacing, base_width):
    lay = Layout(level=64, spacing=spacing, base_width=base_width, min_width=base_width / 4, frame=True)
    side = lay.extent
    for i, j in [(0, 0), (63, 63), (0, 63), (63, 0), (31, 0)]:       # the largest image in the edge cells
        x, y = lay.point(i + 0.5, j + 0.5)
        assert base_width / 2 <= x <= side - base_width / 2 and base_width / 2 <= y <= side - base_width / 2
    clusters = [{"cluster": k, "label": label, "x": x, "y": y}
                for k, (label, x, y) in enumerate([("corner", 0, 0), ("far corner " * 20, 1, 1), ("top", 0.5, 0),
                                                   ("left", 0, 0.5), ("x" * 500, 0.98, 0.02), ("centre", 0.5, 0.5)])]
    labels = label_items({"clusters": clusters}, lay)
    assert len(labels) == len(clusters)
    for it in labels:
        assert it.width / 2 <= it.x <= side - it.width / 2 and it.height / 2 <= it.y <= side - it.height / 2
        # the plan's height is never below the one the loopback API gives the text
        assert it.height >= server.text_height(it.text, it.width, it.font_size)
    centre = next(it for it in labels if it.text == "centre")
    assert (centre.x, centre.y) == lay.point(32, 31)                 # a label with room is not moved
    assert text_height("one line", 600, 40) == 60
    assert text_height("東京タワー" * 4, 600, 40) == 120         # 20 full-width glyphs: 800 px, two lines


@pytest.mark.parametrize("url", ["https://api.miro.com", "http://127.0.0.1:8080", "http://localhost:9",
                                 "http://[::1]:8000/", "http://127.3.2.1", " https://api.miro.com/ "])
def test_api_url_over_https_or_to_this_machine_is_accepted(url):
    assert check_api_url(url) == url.strip()


@pytest.mark.parametrize("url", ["http://api.miro.com", "http://192.168.1.10", "http://[2001:db8::1]", "file:///x",
                                 "api.miro.com", "http://localhost.evil.example"])
def test_api_url_that_is_not_https_or_leaves_this_machine_is_refused(url):
    with pytest.raises(UserError, match="--api_url"):
        check_api_url(url)
