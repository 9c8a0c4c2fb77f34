"""The Miro REST API v2 through the official client (`miro_api`), with credits, 429s and 5xx handled.

Every request goes through the client's own serializer (`_..._serialize`) and `api_client.call_api`,
so the response headers (X-RateLimit-*) are visible to the credit gate. One place works around
miro-api 2.2.4's image upload: its multipart encoder is handed the `data` part as a dict and fails
(`TypeError: a bytes-like object is required, not 'dict'`); the API documents `data` as a JSON file
part, so `create_image` sends it as one (`data.json`, `application/json`) in the same single request.

Miro stores a text's content as HTML (`a & b` is listed as `<p>a &amp; b</p>`): texts are sent
escaped and read back through `plain_text`. Every wait on the rate limit lasts at most one window
(`MAX_WAIT`), whatever the X-RateLimit-Reset header says. The token travels only over https, or
plain http to this machine (`check_api_url`).
"""
from __future__ import annotations

import html
import ipaddress
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import urllib3
from miro_api import MiroApi
from miro_api.configuration import Configuration
from miro_api.exceptions import ApiException
from miro_api.models.fixed_ratio_geometry import FixedRatioGeometry
from miro_api.models.frame_changes import FrameChanges
from miro_api.models.frame_create_request import FrameCreateRequest
from miro_api.models.geometry_no_rotation import GeometryNoRotation
from miro_api.models.parent import Parent
from miro_api.models.position_change import PositionChange
from miro_api.models.text_create_request import TextCreateRequest
from miro_api.models.text_data import TextData
from miro_api.models.text_style import TextStyle
from miro_api.models.upload_file_from_device_data import UploadFileFromDeviceData
from miro_api.models.width_only_adjustable_geometry import WidthOnlyAdjustableGeometry
from miro_api.rest import RESTClientObject

from common.cli import UserError

DEFAULT_API_URL = "https://api.miro.com"
MAX_UPLOAD_BYTES = 6 * 1024 * 1024          # "Maximum file size is 6 MB"
CREDITS_PER_MINUTE = 100_000                # per user and app
COST = {"read": 50, "create": 100, "list": 100, "delete": 500}   # Level 1, 2, 2, 3
LIST_PAGE = "50"                            # `limit` is a string, 10..50
_SAME = 1e-3                                # reset times closer than this name one window
MAX_WAIT = 60.0                             # one window: the longest any rate-limit wait may last
_TAG = re.compile(r"<[^>]*>")


class MiroUnavailable(Exception):
    """Miro kept failing (5xx, timeouts, dropped connections) after the allowed attempts."""


class Ambiguous(Exception):
    """A create was answered by a 5xx or a timeout: it may or may not have landed on the board."""


class _RateLimited(Exception):
    pass


class _Transient(Exception):
    pass


# ---------------------------------------------------------------------------- credit gate
@dataclass
class CreditGate:
    """What the headers say is left of this window's credits; callers wait for the reset when it runs out.

    Credits are reserved before a request is sent, so concurrent requests never overspend what is
    known. Answers that arrive after a refill but belong to the previous window are ignored. A reset
    further away than one window (a header in milliseconds, or wrong) is waited for at most
    MAX_WAIT seconds; then requests go out again and Miro's answers say where the window stands.
    `clock` and `sleep` are injectable, so the waits can be tested without waiting.
    """

    remaining: float | None = None
    limit: float | None = None
    reset_at: float = 0.0                    # UNIX time of the next refill (0: not known yet)
    waited: float = 0.0                      # wall-clock seconds spent waiting on the rate limit
    rate_limited: int = 0                    # 429 answers seen
    _stale_before: float = 0.0               # reset time of the last window refilled locally
    _counted: float = 0.0                    # the reset whose wait is already in `waited`
    clock: Callable[[], float] = field(default=time.time, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def acquire(self, cost: int) -> None:
        while True:
            with self._lock:
                now = self.clock()
                if self.reset_at and now >= self.reset_at:
                    # refilled (to an unknown amount when no Limit header was seen: let requests find out)
                    self.remaining, self._stale_before, self.reset_at = self.limit, self.reset_at, 0.0
                if self.remaining is not None and self.remaining < cost and not self.reset_at:
                    # spent, but no reset known to wait for: let requests through; their answers
                    # (or a 429's Reset header) tell us where the window stands
                    self.remaining = None
                if self.remaining is None or self.remaining >= cost:
                    if self.remaining is not None:
                        self.remaining -= cost
                    return
                self.reset_at = min(self.reset_at, now + MAX_WAIT)
                target = self.reset_at + 0.02
                if self.reset_at != self._counted:   # one reset, many waiting threads: count it once
                    self.waited += target - now
                    self._counted = self.reset_at
            self.sleep(max(target - now, 0.0))

    def observe(self, headers) -> None:
        limit, left = _header(headers, "X-RateLimit-Limit"), _header(headers, "X-RateLimit-Remaining")
        reset = _reset_time(headers, self.clock())
        with self._lock:
            if limit is not None:
                self.limit = limit
            # every answer of one window names the same reset time, so exact comparisons are safe
            if reset is not None and reset <= self._stale_before + _SAME:
                return                            # an answer from a window already refilled here
            if reset is not None and self.reset_at and reset > self.reset_at + _SAME:
                # Miro started a new window before our clock said so: its count is the truth
                self.reset_at, self.remaining = reset, left
                return
            if reset is not None and not self.reset_at:
                self.reset_at = reset
            if left is not None:
                self.remaining = left if self.remaining is None else min(self.remaining, left)

    def blocked(self, headers) -> float:
        """A 429: nothing is left until the reset the answer names. Returns the seconds to wait (<= MAX_WAIT)."""
        retry_after = _header(headers, "Retry-After")
        with self._lock:
            now = self.clock()
            reset = _reset_time(headers, now)
            self.rate_limited += 1
            self.remaining = 0
            if reset is not None and reset > now:
                self.reset_at = min(reset, now + MAX_WAIT)
            else:
                self.reset_at = now + min(retry_after if retry_after and retry_after > 0 else 1.0, MAX_WAIT)
            if self.reset_at != self._counted:
                self.waited += self.reset_at - now
                self._counted = self.reset_at
            return self.reset_at - now


def _header(headers, name: str) -> float | None:
    if not headers:
        return None
    value = headers.get(name)
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is None or math.isfinite(number) else None


def _reset_time(headers, now: float) -> float | None:
    """X-RateLimit-Reset as UNIX seconds (Miro documents an epoch timestamp in seconds). A value in
    milliseconds, or a count of seconds from now, is read as what it must mean."""
    value = _header(headers, "X-RateLimit-Reset")
    if value is None:
        return None
    if value > 1e11:            # milliseconds since the epoch (1e11 s is the year 5138)
        return value / 1000
    if value < 1e9:             # not a timestamp of this century: seconds from now
        return now + max(value, 0.0)
    return value


# ---------------------------------------------------------------------------- text and URLs
def plain_text(content: str | None) -> str:
    """What a reader sees in Miro's HTML content: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(_TAG.sub(" ", content or "")).split())


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(url: str) -> str:
    """The API's base URL, if the token may travel to it: https, or plain http to this machine only."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise UserError("--api_url must be an https:// URL such as https://api.miro.com")
    shown = f"{parts.scheme}://{host}" + (f":{port}" if port else "")      # never the user:password part
    if parts.scheme == "http" and not _is_loopback(host):
        raise UserError(f"--api_url {shown} is plain http: the token would travel in clear text; use https://, "
                        "or http:// only to a server on this machine (localhost, 127.0.0.1, ::1)")
    return url.strip()


# ---------------------------------------------------------------------------- one board
@dataclass(frozen=True)
class BoardItem:
    """An item as listed on the board: enough to recognise what this tool placed."""

    id: str
    type: str
    text: str                  # image/frame title, text content
    parent: str | None
    x: float | None
    y: float | None


class MiroBoard:
    """The requests step 08 makes on one board, each paying its credits at the gate first."""

    def __init__(self, token: str, board_id: str, api_url: str = DEFAULT_API_URL, *, gate: CreditGate | None = None,
                 retries: int = 5, timeout: float = 60.0, pool: int = 8):
        self.board_id = board_id
        self.gate = gate or CreditGate()
        self.retries = retries
        self.timeout = (min(timeout, 10.0), timeout)
        self.api = MiroApi(token)
        # a configuration of our own: the client's default one is shared by every MiroApi in the process
        config = Configuration(host=api_url.rstrip("/"))
        config.connection_pool_maxsize = pool
        # urllib3 may only retry a request that never left (connect errors): a POST that reached
        # Miro must come back to us, so that it is reconciled instead of silently sent twice
        config.retries = urllib3.Retry(total=2, connect=2, read=0, status=0, redirect=0, other=0)
        self.api.api_client.configuration = config
        self.api.api_client.rest_client = RESTClientObject(config)

    # ------------------------------------------------------------------ requests
    def _send(self, kind: str, param, types: dict):
        """One attempt. Raises _RateLimited, _Transient, UserError, or returns the ApiResponse."""
        client = self.api.api_client
        method, url, headers, body, post_params = param
        self.gate.acquire(COST[kind])
        try:
            # a copy of the headers: the client deletes Content-Type from the dict it is given for
            # multipart bodies, and a retry must send the same request again
            response = client.call_api(method, url, dict(headers), body, post_params, _request_timeout=self.timeout)
            response.read()
        except urllib3.exceptions.HTTPError as e:       # timeouts, refused and dropped connections
            raise _Transient(f"{type(e).__name__}") from None
        headers = response.getheaders()
        self.gate.observe(headers)
        if response.status == 429:
            self.gate.sleep(self.gate.blocked(headers))
            raise _RateLimited()
        if response.status >= 500:
            raise _Transient(f"HTTP {response.status}")
        try:
            return client.response_deserialize(response_data=response, response_types_map=types)
        except ApiException as e:
            raise self._user_error(e.status, e.body) from None

    def _user_error(self, status: int, body: str | None) -> Exception:
        b = self.board_id
        if status == 401:
            return UserError("Miro refused the token (401 Unauthorized): pass a valid --token or set MIRO_TOKEN "
                             "(the app needs the boards:read and boards:write scopes)")
        if status == 403:
            return UserError(f"no access to board {b} (403 Forbidden): share the board with the token's user "
                             "(edit rights) or check --board")
        if status == 404:
            return UserError(f"board {b} not found (404): check --board (the id follows /app/board/ in the "
                             "board's URL)")
        if status == 413:
            return UserError(f"Miro refused an image as too large (413; the limit is {MAX_UPLOAD_BYTES // 2**20} MB): "
                             "re-run step 07 to rebuild the thumbnails")
        detail = " ".join(str(body or "").split())[:300]
        if status == 400 and "outside of parent boundaries" in detail:
            return UserError("Miro refused an item as outside its frame (HTTP 400: new position is outside of parent "
                             "boundaries); if the map's frame was resized or deleted by hand, run again with --replace")
        if 400 <= status < 500:  # e.g. 400 when the map's frame was deleted on the board by hand
            return UserError(f"Miro refused a request (HTTP {status}: {detail}); if items of this map were "
                             "deleted on the board by hand, run again with --replace")
        return RuntimeError(f"Miro answered HTTP {status}: {detail}")

    def call(self, kind: str, param, types: dict):
        """Reads and deletes: safe to repeat, so 429s wait for the reset and 5xx retry a bounded number of times."""
        failures = 0
        while True:
            try:
                return self._send(kind, param, types)
            except _RateLimited:
                continue
            except _Transient as e:
                failures += 1
                if failures > self.retries:
                    raise MiroUnavailable(f"{e} after {failures} attempts") from None
                time.sleep(min(0.2 * 2 ** failures, 10.0))

    def create(self, param, types: dict) -> str:
        """Creates: a 429 is a clear "not created" and is retried; a 5xx or timeout is Ambiguous."""
        while True:
            try:
                return self._send("create", param, types).data.id
            except _RateLimited:
                continue
            except _Transient as e:
                raise Ambiguous(str(e)) from None

    # ------------------------------------------------------------------ endpoints
    def check(self) -> str:
        """The board's name; a bad token or board fails here, before anything is placed."""
        param = self.api._get_specific_board_serialize(board_id=self.board_id, _request_auth=None,
                                                       _content_type=None, _headers=None, _host_index=0)
        return self.call("read", param, {"200": "BoardWithLinksAndLastOpened"}).data.name or ""

    def create_image(self, path: Path, title: str, x: float, y: float, width: float,
                     parent: str | None = None) -> str:
        data = UploadFileFromDeviceData(title=title, position=PositionChange(x=x, y=y),
                                        geometry=FixedRatioGeometry(width=width), parent=Parent(id=parent) if parent else None)
        param = image_upload_request(self.api, self.board_id, path, data)
        return self.create(param, {"201": "ImageItem"})

    def create_text(self, content: str, x: float, y: float, width: float, font_size: int,
                    parent: str | None = None) -> str:
        # content is HTML to Miro: escaped, so a label reads exactly as planned ("a < b", "R&D")
        body = TextCreateRequest(data=TextData(content=html.escape(content, quote=False)),
                                 position=PositionChange(x=x, y=y),
                                 geometry=WidthOnlyAdjustableGeometry(width=width),
                                 style=TextStyle(font_size=str(font_size), fill_color="#ffffff", fill_opacity="0.8",
                                                 text_align="center"),
                                 parent=Parent(id=parent) if parent else None)
        param = self.api._create_text_item_serialize(board_id=self.board_id, text_create_request=body,
                                                     _request_auth=None, _content_type=None, _headers=None,
                                                     _host_index=0)
        return self.create(param, {"201": "TextItem"})

    def create_frame(self, title: str, x: float, y: float, width: float, height: float) -> str:
        body = FrameCreateRequest(data=FrameChanges(title=title, format="custom", type="freeform"),
                                  position=PositionChange(x=x, y=y),
                                  geometry=GeometryNoRotation(width=width, height=height))
        param = self.api._create_frame_item_serialize(board_id=self.board_id, frame_create_request=body,
                                                      _request_auth=None, _content_type=None, _headers=None,
                                                      _host_index=0)
        return self.create(param, {"201": "FrameItem"})

    def delete(self, item_id: str) -> bool:
        """Delete an item; False when it was already gone (removed by hand, or by an earlier attempt)."""
        param = self.api._delete_item_serialize(board_id=self.board_id, item_id=item_id, _request_auth=None,
                                                _content_type=None, _headers=None, _host_index=0)
        try:
            self.call("delete", param, {"204": "object"})
        except UserError as e:
            if "404" in str(e):
                return False
            raise
        return True

    def items(self) -> Iterator[BoardItem]:
        """Every item on the board, page by page (cursor paging, 50 a page)."""
        cursor = None
        while True:
            param = self.api._get_items_serialize(board_id=self.board_id, limit=LIST_PAGE, type=None, cursor=cursor,
                                                  _request_auth=None, _content_type=None, _headers=None,
                                                  _host_index=0)
            page = self.call("list", param, {"200": "GenericItemCursorPaged"}).data
            for item in page.data or []:
                yield _board_item(item)
            cursor = page.cursor
            if not cursor or not page.data:
                return


def _board_item(item) -> BoardItem:
    data = item.data.to_dict() if item.data is not None else {}
    data = data if isinstance(data, dict) else {}
    text = plain_text(data.get("title") or data.get("content") or "")
    pos = item.position
    return BoardItem(id=item.id, type=item.type, text=text, parent=item.parent.id if item.parent else None,
                     x=pos.x if pos else None, y=pos.y if pos else None)


def image_upload_request(api: MiroApi, board_id: str, path: Path, data: UploadFileFromDeviceData):
    """The multipart request for one image: the client's serializer, plus `data` as a JSON file part.

    The serializer is called without `data` (with it, urllib3 later fails on the dict) and the part
    is appended the way the API documents it: a JSON document with Content-Type application/json.
    """
    param = api._create_image_item_using_local_file_serialize(
        board_id_platform_file_upload=board_id, resource=str(path), data=None,
        _request_auth=None, _content_type=None, _headers=None, _host_index=0)
    method, url, headers, body, post_params = param
    part = json.dumps(data.to_dict(), separators=(",", ":"))
    post_params = [("data", ("data.json", part, "application/json"))] + list(post_params)
    return method, url, headers, body, post_params
