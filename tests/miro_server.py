"""A Miro REST API v2 on 127.0.0.1, for the tests and the benchmark of step 08.

Run alone (`python -m tests.miro_server`) it serves until Ctrl-C and prints the URL, board and
token to pass to 08_upload_to_miro.py, for trying the step offline.

The real `miro_api` client is pointed at it. It checks what the documented API checks: the bearer
token, the board, the paths, the JSON bodies of frames and texts, and the multipart body of an
image upload (a `resource` file part, at most 6 MB, and an optional `data` part holding a JSON
document typed application/json). It answers with ids as Miro does (long numeric strings),
positions relative to the canvas centre or to the parent frame's top-left corner, and cursor
pages of at most 50 items (`limit` given as 10..50). Errors carry Miro's body: type, code,
context, message, status.

Two of Miro's rules that shape what a client must do:
- an item created inside a frame (`parent.id`) has its centre given from the frame's top-left
  corner, and its whole box must lie within the frame, or the answer is 400 "new position is
  outside of parent boundaries". A text's height is what its content needs at its width and font
  size (estimated here: `text_height`);
- a text's content is stored as HTML: it comes back as `<p>...</p>`, with `&`, `<` and `>`
  escaped, whatever plain text was sent.

Rate limiting follows the documented credit model: every request costs credits (Level 1 = 50,
Level 2 = 100, Level 3 = 500) from a budget per window; an answer without enough credits left is a
429. Every answer carries X-RateLimit-Limit, -Remaining and -Reset (UNIX time of the refill). The
window and the budget are settable so tests run in seconds; `reset_format` can make the Reset
header misread its unit (milliseconds, or seconds from now) as a client must survive. Faults can be queued for the next
creates: a 5xx before anything happens, a 5xx after the item was created, or a dropped
connection after the item was created (what a client sees as a timeout).
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import html
import io
import json
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from PIL import Image

TOKEN = "test-miro-token-7f3a"
BOARD = "uXjVTestBoard1="
MAX_UPLOAD = 6 * 1024 * 1024
COSTS = {"GET board": 50, "GET items": 100, "POST": 100, "DELETE": 500}
_ITEM_KEYS = {
    "images": {"title", "altText", "position", "geometry", "parent"},
    "texts": {"data", "style", "position", "geometry", "parent"},
    "frames": {"data", "style", "position", "geometry"},
}


OUTSIDE_PARENT = "new position is outside of parent boundaries"
_INLINE_TAGS = {"p", "a", "b", "strong", "i", "em", "u", "s", "br", "span"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, context: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.context = status, code, message, context

    def body(self) -> dict:
        return {"type": "error", "code": self.code, "context": self.context, "message": self.message,
                "status": self.status}


@dataclass
class MiroState:
    """Everything the server knows. Tests change the knobs between runs."""

    token: str = TOKEN
    boards: dict = field(default_factory=lambda: {BOARD: {}})       # board id -> {item id: item}
    forbidden: set = field(default_factory=set)
    budget: int = 100_000
    window: float = 60.0
    reset_format: str = "epoch"           # X-RateLimit-Reset as UNIX seconds; "epoch_ms" or "seconds_left" misread it
    latency: float = 0.0                  # seconds added to every create (a real upload takes time)
    faults: deque = field(default_factory=deque)   # next creates: (status, landed) or ("drop", True)
    storm: int = 0                        # the next N creates are answered 429 whatever the budget
    requests: list = field(default_factory=list)   # (method, path, status)
    next_id: int = 3458764612345678000
    window_start: float | None = None
    used: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)

    # ---------------------------------------------------------------- views for tests
    def items(self, board: str = BOARD, type: str | None = None) -> list[dict]:
        with self.lock:
            return [dict(it) for it in self.boards[board].values() if type is None or it["type"] == type]

    def add_by_hand(self, board: str = BOARD, **fields) -> str:
        """An item a workshop participant put on the board (not placed by step 08)."""
        with self.lock:
            item = self._new_item(board, fields.pop("type", "sticky_note"), fields)
            return item["id"]

    def outside_their_frame(self, board: str = BOARD) -> list[str]:
        """Ids of the children whose box does not lie within their parent frame (Miro refuses such items)."""
        out = []
        with self.lock:
            for it in self.boards[board].values():
                if "parent" not in it:
                    continue
                try:
                    check_inside_parent({"parent": it["parent"]["id"], "position": it["position"],
                                         "geometry": it["geometry"]}, self, board)
                except ApiError:
                    out.append(it["id"])
        return out

    def count(self, method: str, status: int | None = None) -> int:
        with self.lock:
            return sum(1 for m, _, s in self.requests if m == method and (status is None or s == status))

    # ---------------------------------------------------------------- internals
    def _new_item(self, board: str, type_: str, fields: dict) -> dict:
        self.next_id += 1 + self.next_id % 7           # not consecutive: ids are opaque strings
        item_id = str(self.next_id)
        parent = fields.get("parent")
        pos = fields.get("position") or {}
        item = {"id": item_id, "type": type_, "data": fields.get("data", {}),
                "position": {"x": pos.get("x", 0.0), "y": pos.get("y", 0.0), "origin": "center",
                             "relativeTo": "parent_top_left" if parent else "canvas_center"},
                "geometry": fields.get("geometry", {}),
                "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "createdBy": {"id": "3074457350000000001", "type": "user"},
                "modifiedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "modifiedBy": {"id": "3074457350000000001", "type": "user"}}
        if "style" in fields:
            item["style"] = fields["style"]
        if parent:
            item["parent"] = {"id": parent}
        self.boards[board][item_id] = item
        return item

    def charge(self, cost: int, create: bool = False) -> tuple[bool, dict]:
        """Spend credits from the current window; (allowed, rate-limit headers)."""
        with self.lock:
            now = time.time()
            if self.window_start is None or now >= self.window_start + self.window:
                whole = float(self.window).is_integer()
                # windows of whole seconds start on a whole second, so the integer Reset header is exact
                self.window_start = math.floor(now) if whole else now
                while now >= self.window_start + self.window:
                    self.window_start += self.window
                self.used = 0
            reset = self.window_start + self.window
            stormy = create and self.storm > 0
            allowed = not stormy and self.used + cost <= self.budget
            if stormy:
                self.storm -= 1
            if allowed:
                self.used += cost
            reset_text = str(int(reset)) if float(reset).is_integer() else f"{reset:.3f}"
            if self.reset_format == "epoch_ms":
                reset_text = str(int(reset * 1000))
            elif self.reset_format == "seconds_left":
                reset_text = str(math.ceil(reset - now))
            return allowed, {"X-RateLimit-Limit": str(self.budget),
                             "X-RateLimit-Remaining": str(max(self.budget - self.used, 0)),
                             "X-RateLimit-Reset": reset_text}


# ---------------------------------------------------------------------------- request bodies
def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, "invalidParameters", f"{what} must be a number")
    return float(value)


def _check_common(body: dict, allowed: set, state: MiroState, board: str) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(400, "invalidParameters", f"unknown fields: {sorted(unknown)}")
    pos = body.get("position") or {}
    if set(pos) - {"x", "y", "origin"}:
        raise ApiError(400, "invalidParameters", "position takes x, y (and origin)")
    for k in ("x", "y"):
        if k in pos:
            _number(pos[k], f"position.{k}")
    geometry = body.get("geometry") or {}
    for k, v in geometry.items():
        if k not in ("width", "height", "rotation"):
            raise ApiError(400, "invalidParameters", f"geometry.{k} is not a field")
        if _number(v, f"geometry.{k}") <= 0 and k != "rotation":
            raise ApiError(400, "invalidParameters", f"geometry.{k} must be positive")
    parent = body.get("parent")
    if parent is not None:
        pid = parent.get("id") if isinstance(parent, dict) else None
        target = state.boards[board].get(pid)
        if not target or target["type"] != "frame":
            raise ApiError(400, "invalidParameters", "parent.id must be a frame on this board")


def _parse_multipart(content_type: str, raw: bytes) -> dict:
    if not content_type.startswith("multipart/form-data") or "boundary=" not in content_type:
        raise ApiError(400, "invalidParameters", "an image from a file is sent as multipart/form-data")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name in parts or name not in ("resource", "data"):
            raise ApiError(400, "invalidParameters", f"unexpected form part {name!r}")
        parts[name] = (part.get_content_type(), part.get_filename(), part.get_payload(decode=True) or b"")
    return parts


def image_body(content_type: str, raw: bytes, state: MiroState, board: str) -> tuple[dict, bytes]:
    parts = _parse_multipart(content_type, raw)
    if "resource" not in parts or not parts["resource"][1]:
        raise ApiError(400, "invalidParameters", "the resource part (the image file) is required")
    image = parts["resource"][2]
    if len(image) > MAX_UPLOAD:
        raise ApiError(413, "fileTooLarge", "Maximum file size is 6 MB")
    if not (image.startswith(b"\xff\xd8\xff") or image.startswith(b"\x89PNG")):
        raise ApiError(400, "invalidFile", "the resource is not an image")
    body = {}
    if "data" in parts:
        ctype, _, payload = parts["data"]
        if ctype != "application/json":
            raise ApiError(400, "invalidParameters", f"the data part must be application/json, not {ctype}")
        try:
            body = json.loads(payload)
        except ValueError:
            raise ApiError(400, "invalidParameters", "the data part is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalidParameters", "the data part must be a JSON object")
        _check_common(body, _ITEM_KEYS["images"], state, board)
        geometry = body.get("geometry") or {}
        if "width" in geometry and "height" in geometry:
            raise ApiError(400, "invalidParameters", "give width or height, not both: images keep their ratio")
    return body, image


def _image_fields(body: dict, image: bytes, item_ref: str) -> dict:
    w, h = Image.open(io.BytesIO(image)).size
    geometry = dict(body.get("geometry") or {})
    if "width" in geometry:
        geometry["height"] = geometry["width"] * h / w
    elif "height" in geometry:
        geometry["width"] = geometry["height"] * w / h
    else:
        geometry = {"width": float(w), "height": float(h)}
    return {"data": {"title": body.get("title", ""), "imageUrl": item_ref},
            "position": body.get("position"), "geometry": geometry, "parent": (body.get("parent") or {}).get("id")}


class _StoredHtml(HTMLParser):
    """Content re-serialised as Miro stores it: inline tags kept (without attributes), text escaped."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in _INLINE_TAGS:
            self.out.append(f"<{tag}>")
        self.text.append(" ")

    def handle_endtag(self, tag):
        if tag in _INLINE_TAGS and tag != "br":
            self.out.append(f"</{tag}>")
        self.text.append(" ")

    def handle_data(self, data):
        self.out.append(html.escape(data, quote=False))
        self.text.append(data)


def _parse_html(content: str) -> _StoredHtml:
    parser = _StoredHtml()
    parser.feed(content)
    parser.close()
    return parser


def stored_html(content: str) -> str:
    """What Miro keeps (and lists) for a text's content: `a & b` comes back as `<p>a &amp; b</p>`."""
    body = "".join(_parse_html(content).out)
    return body if body.startswith("<p>") else f"<p>{body}</p>"


def text_height(content: str, width: float, font_size: float) -> float:
    """The height a text needs: its visible characters wrapped at `width`, lines 1.4 x the font size."""
    visible = " ".join("".join(_parse_html(content).text).split())
    lines = max(1, math.ceil(len(visible) * 0.5 * font_size / width))
    return round(lines * font_size * 1.4, 2)


def check_inside_parent(fields: dict, state: MiroState, board: str) -> None:
    """Miro's rule for a child: its whole box, centred at a position from the frame's top-left, lies in the frame."""
    parent = fields.get("parent")
    if not parent:
        return
    frame = state.boards[board].get(parent)
    if frame is None:
        raise ApiError(400, "invalidParameters", "parent.id must be a frame on this board")
    fw, fh = frame["geometry"].get("width", 100.0), frame["geometry"].get("height", 100.0)
    pos = fields.get("position") or {}
    x, y = float(pos.get("x", 0.0)), float(pos.get("y", 0.0))
    half_w, half_h = fields["geometry"]["width"] / 2, fields["geometry"]["height"] / 2
    eps = 1e-6
    if x - half_w < -eps or y - half_h < -eps or x + half_w > fw + eps or y + half_h > fh + eps:
        raise ApiError(400, "invalidParameters", OUTSIDE_PARENT)


def _text_fields(body: dict, data: dict) -> tuple[dict, dict]:
    size = (body.get("style") or {}).get("fontSize")
    if size is not None and not (isinstance(size, str) and size.isdigit()):
        raise ApiError(400, "invalidParameters", "style.fontSize is a string of digits")
    font = float(size or 14)
    content = data["content"]
    geometry = dict(body.get("geometry") or {})
    if "height" in geometry:
        raise ApiError(400, "invalidParameters", "a text takes a width only: its height follows its content")
    visible = " ".join("".join(_parse_html(content).text).split())
    width = geometry.get("width") or max(font, len(visible) * 0.5 * font)
    geometry = {"width": width, "height": text_height(content, width, font)}
    return {"content": stored_html(content)}, geometry


def json_item_fields(kind: str, body, state: MiroState, board: str) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "invalidParameters", "the body must be a JSON object")
    _check_common(body, _ITEM_KEYS[kind], state, board)
    data = body.get("data")
    if not isinstance(data, dict):
        raise ApiError(400, "invalidParameters", "data is required")
    geometry = body.get("geometry") or {}
    if kind == "texts":
        if not isinstance(data.get("content"), str) or not data["content"] or set(data) != {"content"}:
            raise ApiError(400, "invalidParameters", "data.content (a string) is the only text data field")
        data, geometry = _text_fields(body, data)
    else:
        if data.get("format", "custom") != "custom" or data.get("type", "freeform") != "freeform":
            raise ApiError(400, "invalidParameters", "only custom freeform frames are supported")
        geometry = {"width": geometry.get("width", 100.0), "height": geometry.get("height", 100.0)}
    fields = {"data": data, "position": body.get("position"), "geometry": geometry,
              "parent": (body.get("parent") or {}).get("id")}
    if "style" in body:
        fields["style"] = body["style"]
    return fields


# ---------------------------------------------------------------------------- HTTP
_BOARD_PATH = re.compile(r"^/v2/boards/([^/]+)(?:/(images|texts|frames|items)(?:/([^/]+))?)?$")


class _Dropped(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MiroTest/1.0"

    def log_message(self, *args):  # quiet: the test output is the client's
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    def _handle(self, method: str):
        state: MiroState = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        headers = {}
        try:
            status, payload, headers = self._route(state, method, split, raw)
        except ApiError as e:
            status, payload = e.status, e.body()
            headers = getattr(e, "headers", headers)
        except _Dropped:
            with state.lock:
                state.requests.append((method, split.path, 0))
            self.close_connection = True
            self.connection.shutdown(2)
            return
        with state.lock:
            state.requests.append((method, split.path, status))
        body = b"" if status == 204 else json.dumps(payload).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, state: MiroState, method: str, split, raw: bytes):
        if self.headers.get("Authorization") != f"Bearer {state.token}":
            raise ApiError(401, "tokenNotProvided", "Authorization failed: bearer token missing or invalid")
        m = _BOARD_PATH.match(split.path)
        if not m:
            raise ApiError(404, "notFound", "no such endpoint")
        board, kind, item_id = (unquote(g) if g else g for g in m.groups())
        if board in state.forbidden:
            raise ApiError(403, "forbidden", "no access to this board")
        if board not in state.boards:
            raise ApiError(404, "boardNotFound", "board not found")
        cost = COSTS["GET board"] if (method, kind) == ("GET", None) else \
            COSTS["GET items"] if method == "GET" else COSTS[method]
        allowed, rl = state.charge(cost, create=method == "POST")
        if not allowed:
            err = ApiError(429, "tooManyRequests", "Request rate limit exceed")
            err.headers = rl
            raise err
        status, payload = self._act(state, method, board, kind, item_id, split, raw)
        return status, payload, rl

    def _act(self, state, method, board, kind, item_id, split, raw):
        if method == "GET" and kind is None:
            return 200, {"id": board, "type": "board", "name": "Workshop board", "description": "",
                         "viewLink": f"https://miro.com/app/board/{board}"}
        if method == "GET" and kind == "items" and item_id is None:
            return 200, self._list(state, board, parse_qs(split.query))
        if method == "DELETE" and kind == "items" and item_id:
            with state.lock:
                if state.boards[board].pop(item_id, None) is None:
                    raise ApiError(404, "itemNotFound", "item not found")
            return 204, None
        if method == "POST" and kind in ("images", "texts", "frames") and item_id is None:
            return 201, self._create(state, board, kind, raw)
        raise ApiError(405 if kind else 404, "methodNotAllowed", f"{method} {split.path} is not an endpoint")

    def _create(self, state: MiroState, board: str, kind: str, raw: bytes) -> dict:
        ctype = self.headers.get("Content-Type", "")
        if kind == "images":
            body, image = image_body(ctype, raw, state, board)
        else:
            if not ctype.startswith("application/json"):
                raise ApiError(415, "unsupportedMediaType", "send JSON")
            try:
                body = json.loads(raw)
            except ValueError:
                raise ApiError(400, "invalidParameters", "the body is not JSON") from None
        if state.latency:
            time.sleep(state.latency)
        with state.lock:
            if kind == "images":
                fields = _image_fields(body, image, f"https://api.miro.com/v2/boards/{board}/images/pending")
            else:
                fields = json_item_fields(kind, body, state, board)
            check_inside_parent(fields, state, board)
            fault = state.faults.popleft() if state.faults else None
            if fault and not fault[1]:
                raise ApiError(fault[0], "internalError", "something went wrong")
            item = state._new_item(board, kind[:-1], fields)
        if fault and fault[0] == "drop":
            raise _Dropped()
        if fault:
            raise ApiError(fault[0], "internalError", "something went wrong")
        return item

    def _list(self, state: MiroState, board: str, query: dict) -> dict:
        limit = query.get("limit", ["10"])[0]
        if not limit.isdigit() or not 10 <= int(limit) <= 50:
            raise ApiError(400, "invalidParameters", "limit must be between 10 and 50")
        limit = int(limit)
        start = 0
        if "cursor" in query:
            try:
                start = int(base64.urlsafe_b64decode(query["cursor"][0]).decode())
            except ValueError:
                raise ApiError(400, "invalidParameters", "bad cursor") from None
        kind = query.get("type", [None])[0]
        with state.lock:
            items = [dict(it) for it in state.boards[board].values() if kind is None or it["type"] == kind]
        page = items[start:start + limit]
        out = {"data": page, "total": len(items), "size": len(page), "limit": limit,
               "links": {"self": f"/v2/boards/{board}/items?limit={limit}"}}
        if start + limit < len(items):
            out["cursor"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
        return out


class MiroServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: MiroState):
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = state

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def start(state: MiroState | None = None) -> MiroServer:
    server = MiroServer(state or MiroState())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="miro-server",
                     daemon=True).start()
    return server


@pytest.fixture
def miro_server():
    """A started loopback Miro API: `.url`, `.state` (knobs and the board's items)."""
    server = start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    srv = start()
    print(f"loopback Miro API at {srv.url}; try:\n  python 08_upload_to_miro.py --api_url {srv.url} "
          f"--board {BOARD} --token {TOKEN}\n(Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        n = len(srv.state.items())
        print(f"\n{n:,} items were on the board")
