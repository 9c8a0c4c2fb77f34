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
from common.miro import CreditGate, MiroBoard, image_upload_request
from common.miro_plan import Layout, board_id, choose_level
from tests.miro_server import BOARD, TOKEN
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
