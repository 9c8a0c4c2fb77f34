"""A loopback Hugging Face Hub for the tests: a real threaded HTTP server on 127.0.0.1.

The real `huggingface_hub` client talks to it through `HF_ENDPOINT`. It serves generic model and
dataset repos given as {path: bytes} and implements what the client calls:

  GET  /api/whoami-v2                                     who owns the bearer token
  GET  /api/{models|datasets}/{repo}[/revision/{rev}]     repo info (sha, gated, siblings)
  GET  /api/{models|datasets}/{repo}/tree/{rev}[/{path}]  listing, recursive, paginated (Link header)
  POST /api/{models|datasets}/{repo}/paths-info/{rev}     info for given paths
  HEAD/GET [/datasets]/{repo}/resolve/{rev}/{path}        file bytes (Range), ETag, X-Repo-Commit, X-Linked-*

Errors carry the headers the Hub sends (X-Error-Code, X-Error-Message) so the client raises its
own exceptions: a bad token -> 401 "Invalid credentials in Authorization header"; a gated repo's
files without accepted terms -> 403 (401 without a token) GatedRepo -> GatedRepoError; an unknown
repo -> 404 RepoNotFound; an unknown file -> 404 EntryNotFound; an unknown revision -> 404
RevisionNotFound. As on the Hub, a gated repo's info and file listing stay visible; only the
file contents are refused.

`add_relaion` publishes a RE-LAION-5B-like dataset repo: gated, a dataset card and generated
shards with RE-LAION's columns at the repo root, named as Spark names them
(`part-00000-<uuid>-c000.snappy.parquet`).

A file's content is bytes, or a Path for files too large to hold in memory (streamed from disk;
its ids are derived from its name, size and modification time instead of its bytes). `rate`
caps the bytes per second the Hub sends, all downloads together, as one network link would.

Usage in a test module:

    from tests.hub_server import hub_server  # noqa: F401

    def test_something(hub_server):
        hub_server.add_repo("org/data", {"a.parquet": b"..."}, repo_type="dataset", gated=True)
        hf_hub_download("org/data", "a.parquet", repo_type="dataset", token=hub_server.token)
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sample.relaion import hub_files, relaion_table

VALID_TOKEN = "hf_loopback-valid-token"
UNACCEPTED_TOKEN = "hf_loopback-no-gated-access"
USER_NAME = "loopback-user"
LFS_SUFFIXES = (".parquet", ".safetensors", ".bin", ".pt", ".pth", ".npy", ".zip", ".tar", ".gz", ".arrow")
LFS_MIN_SIZE = 10 * 1024 * 1024
DEFAULT_PAGE_SIZE = 1000  # the Hub's page size for a tree listing without expand
DATE = "2024-08-30T00:00:00.000Z"
CHUNK = 256 * 1024  # bytes per write of a file body

_API_RE = re.compile(r"^/api/(?P<kind>models|datasets|spaces)/(?P<rest>.+)$")
_RESOLVE_RE = re.compile(r"^/(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+|[^/]+)/resolve/(?P<rest>.+)$")


def relaion_parquet_bytes(rows: int, city: str = "Madrid", seed: int = 0) -> bytes:
    """One RE-LAION-like shard as the Hub serves it (snappy parquet, small row groups)."""
    sink = pa.BufferOutputStream()
    pq.write_table(relaion_table(rows, city, seed), sink, row_group_size=100, compression="snappy")
    return sink.getvalue().to_pybytes()


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _stand_in(path: Path) -> bytes:
    """What a file on disk is hashed as: its name, size and modification time, not its bytes."""
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode()


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    files: dict[str, bytes | Path]
    gated: bool = False
    sha: str = field(init=False)

    def __post_init__(self):
        digest = hashlib.sha1(f"{self.repo_type}/{self.repo_id}".encode())
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + bytes.fromhex(self.sha256(path)))
        self.sha = digest.hexdigest()

    def size(self, path: str) -> int:
        data = self.files[path]
        return data.stat().st_size if isinstance(data, Path) else len(data)

    def sha256(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha256(_stand_in(data) if isinstance(data, Path) else data).hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES) or self.size(path) >= LFS_MIN_SIZE

    def file_entry(self, path: str) -> dict:
        data, size = self.files[path], self.size(path)
        oid = _git_blob_sha(_stand_in(data) if isinstance(data, Path) else data)
        entry = {"type": "file", "oid": oid, "size": size, "path": path}
        if self.is_lfs(path):
            entry["lfs"] = {"oid": self.sha256(path), "size": size, "pointerSize": 134}
        return entry

    def chunks(self, path: str, start: int, end: int):
        """The bytes start..end (inclusive), in pieces of at most CHUNK."""
        data = self.files[path]
        if not isinstance(data, Path):
            for at in range(start, end + 1, CHUNK):
                yield data[at:min(at + CHUNK, end + 1)]
            return
        with data.open("rb") as f:
            f.seek(start)
            left = end + 1 - start
            while left > 0:
                piece = f.read(min(CHUNK, left))
                if not piece:
                    return
                left -= len(piece)
                yield piece

    def folders(self) -> set[str]:
        out = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return out

    def folder_entry(self, path: str) -> dict:
        return {"type": "directory", "oid": hashlib.sha1(f"{self.sha}/{path}".encode()).hexdigest(), "path": path}

    def tree(self, under: str, recursive: bool) -> list[dict] | None:
        """Entries below `under` (all levels if recursive), folders first as the Hub lists them."""
        folders = self.folders()
        if under and under not in folders:
            return None
        prefix = under + "/" if under else ""

        def wanted(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix):])

        return ([self.folder_entry(p) for p in sorted(folders) if wanted(p)]
                + [self.file_entry(p) for p in sorted(self.files) if wanted(p)])

    def info(self, blobs: bool) -> dict:
        siblings = []
        for path in sorted(self.files):
            sib = {"rfilename": path}
            if blobs:
                e = self.file_entry(path)
                sib.update(size=e["size"], blobId=e["oid"], lfs=e.get("lfs") and
                           {"sha256": e["lfs"]["oid"], "size": e["size"], "pointerSize": 134})
            siblings.append(sib)
        doc = {"_id": self.sha[:24], "id": self.repo_id, "author": self.repo_id.split("/")[0],
               "sha": self.sha, "lastModified": DATE, "createdAt": DATE, "private": False,
               "gated": "manual" if self.gated else False, "disabled": False, "downloads": 0,
               "likes": 0, "tags": [], "siblings": siblings}
        if self.repo_type == "model":
            doc["modelId"] = self.repo_id
        return doc


class LoopbackHub:
    """State of one loopback Hub: repos, tokens, and every request it saw."""

    def __init__(self, rate: float | None = None):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.rate = rate  # bytes per second for all file bodies together; None: as fast as it goes
        self._next_send = 0.0
        self.token = VALID_TOKEN
        # a valid login that never accepted any gated repo's terms
        self.unaccepted_token = UNACCEPTED_TOKEN
        self.tokens = {VALID_TOKEN: True, UNACCEPTED_TOKEN: False}  # token -> may read gated repos
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.page_size = DEFAULT_PAGE_SIZE
        self.url = ""
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ test-facing API
    def add_repo(self, repo_id: str, files: dict[str, bytes | Path], repo_type: str = "dataset",
                 gated: bool = False) -> Repo:
        assert repo_type in ("dataset", "model", "space"), f"unknown repo type {repo_type!r}"
        repo = Repo(repo_id, repo_type, {p: b if isinstance(b, Path) else bytes(b) for p, b in files.items()}, gated)
        with self._lock:
            self.repos[(repo_type, repo_id)] = repo
        return repo

    def add_relaion(self, repo_id: str, parts: int = 3, rows: int = 300, city: str = "Madrid", seed: int = 0,
                    gated: bool = True) -> dict[str, bytes]:
        """A RE-LAION-5B-like repo of `parts` shards of `rows` rows each; returns {file name: bytes}."""
        files = {name: relaion_parquet_bytes(rows, city, seed * 1000 + i)
                 for i, name in enumerate(hub_files(parts, seed))}
        self.add_repo(repo_id, {"README.md": b"# RE-LAION-5B\n", **files}, repo_type="dataset", gated=gated)
        return files

    def pace(self, n: int) -> None:
        """Wait until `n` more bytes fit under `rate` (shared by every download in flight)."""
        if not self.rate:
            return
        with self._lock:
            at = max(time.monotonic(), self._next_send)
            self._next_send = at + n / self.rate
        time.sleep(max(0.0, at - time.monotonic()))

    def paths_requested(self, method: str | None = None) -> list[str]:
        return [p for m, p, _ in self.requests if method is None or m == method]

    # ------------------------------------------------------------------ server life
    def start(self) -> "LoopbackHub":
        hub = self

        class Handler(_HubHandler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="loopback-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: LoopbackHub

    def log_message(self, *args):  # keep test output quiet
        pass

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None, head: bool = False) -> None:
        body = json.dumps(obj).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})}, head)

    def _error(self, status: int, code: str | None, message: str, head: bool = False,
               extra: dict | None = None) -> None:
        headers = {"X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers, head)

    def _record(self) -> None:
        with self.state._lock:
            self.state.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))

    def _token(self) -> tuple[str | None, bool]:
        """(token, ok): ok is False when a token was sent that this Hub does not know."""
        auth = self.headers.get("Authorization")
        if not auth:
            return None, True
        token = auth[7:] if auth.lower().startswith("bearer ") else auth
        return token, token in self.state.tokens

    def _find_repo(self, kind: str, rest: str) -> tuple[Repo | None, str]:
        """The repo named at the start of `rest` ("org/name/..." or "name/...") and what follows."""
        repo_type = {"models": "model", "datasets": "dataset", "spaces": "space", None: "model"}[kind]
        parts = rest.split("/")
        for n in (2, 1):
            repo = self.state.repos.get((repo_type, "/".join(parts[:n])))
            if repo is not None:
                return repo, "/".join(parts[n:])
        return None, ""

    def _revision_ok(self, repo: Repo, revision: str, head: bool = False) -> bool:
        if unquote(revision) in ("main", repo.sha):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}", head)
        return False

    # ------------------------------------------------------------------ verbs
    def do_HEAD(self):
        self._dispatch(head=True)

    def do_GET(self):
        self._dispatch(head=False)

    def do_POST(self):
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        self._record()
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        token, ok = self._token()
        if not ok:
            return self._error(401, None, "Invalid credentials in Authorization header", head)
        if url.path == "/api/whoami-v2":
            if token is None:
                return self._error(401, None, "Unauthorized", head)
            return self._json(200, {"type": "user", "name": USER_NAME, "auth": {"type": "access_token"}}, head=head)
        if m := _API_RE.match(url.path):
            return self._api(m["kind"], m["rest"], parse_qs(url.query), head)
        if m := _RESOLVE_RE.match(url.path):
            return self._resolve(m["kind"], m["repo"] + "/resolve/" + m["rest"], token, head)
        self._error(404, None, "Not Found", head)

    def _api(self, kind: str, rest: str, query: dict, head: bool) -> None:
        repo, tail = self._find_repo(kind, rest)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found", head)
        op, _, arg = tail.partition("/")
        if op == "" or op == "revision":
            if op == "revision" and not self._revision_ok(repo, arg, head):
                return
            return self._json(200, repo.info(blobs="blobs" in query), head=head)
        if op == "tree" and self.command == "GET":
            return self._tree(repo, arg, query, head)
        if op == "paths-info" and self.command == "POST":
            return self._paths_info(repo, arg)
        self._error(404, None, "Not Found", head)

    def _tree(self, repo: Repo, arg: str, query: dict, head: bool) -> None:
        revision, _, under = arg.partition("/")
        if not self._revision_ok(repo, revision, head):
            return
        recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
        entries = repo.tree(unquote(under).strip("/"), recursive)
        if entries is None:
            return self._error(404, "EntryNotFound", f"{unquote(under)} does not exist on \"{revision}\"", head,
                               {"X-Repo-Commit": repo.sha})
        start = int(query.get("cursor", ["0"])[0])
        page = entries[start:start + self.state.page_size]
        headers = {}
        if start + self.state.page_size < len(entries):
            path = urlsplit(self.path).path
            nxt = f"{self.state.url}{path}?recursive={str(recursive).lower()}&cursor={start + self.state.page_size}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._json(200, page, headers, head)

    def _paths_info(self, repo: Repo, revision: str) -> None:
        if not self._revision_ok(repo, revision):
            return
        form = parse_qs(self.body.decode())
        folders = repo.folders()
        out = []
        for path in form.get("paths", []):
            if path in repo.files:
                out.append(repo.file_entry(path))
            elif path in folders:
                out.append(repo.folder_entry(path))
        self._json(200, out)

    def _resolve(self, kind: str | None, rest: str, token: str | None, head: bool) -> None:
        repo, tail = self._find_repo(kind, rest)
        if repo is None or not tail.startswith("resolve/"):
            return self._error(404, "RepoNotFound", "Repository not found", head)
        revision, _, path = tail[len("resolve/"):].partition("/")
        path = unquote(path)
        if not self._revision_ok(repo, revision, head):
            return
        if repo.gated and not self.state.tokens.get(token or "", False):
            what = f"{repo.repo_type} {repo.repo_id}"
            if token is None:
                return self._error(401, "GatedRepo", f"Access to {what} is restricted. You must have access to it "
                                   "and be authenticated to access it. Please log in.", head)
            return self._error(403, "GatedRepo", f"Access to {what} is restricted and you are not in the authorized "
                               f"list. Visit {self.state.url}/{quote(repo.repo_id)} to ask for access.", head)
        if path not in repo.files:
            return self._error(404, "EntryNotFound", f"Entry not found: {path}", head, {"X-Repo-Commit": repo.sha})
        self._send_file(repo, path, head)

    def _send_file(self, repo: Repo, path: str, head: bool) -> None:
        size = repo.size(path)
        entry = repo.file_entry(path)
        etag = f'"{entry["lfs"]["oid"]}"' if "lfs" in entry else f'"{entry["oid"]}"'
        headers = {"ETag": etag, "X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream",
                   "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}";'}
        if "lfs" in entry:
            headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(size)})
        status, start, end = 200, 0, size - 1
        rng = self.headers.get("Range")
        if rng and not head:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            start = int(m[1]) if m and m[1] else None
            if m is None or start is None or start >= size:
                return self._send(416, b"", {"Content-Range": f"bytes */{size}", **headers})
            status, end = 206, (min(int(m[2]), size - 1) if m[2] else size - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(status, b"", {**headers, "Content-Length": str(end + 1 - start)}, head=True)
        if head:
            return
        for piece in repo.chunks(path, start, end):
            self.state.pace(len(piece))
            self.wfile.write(piece)


def point_client_at(monkeypatch, url: str, home) -> None:
    """Make the already-imported huggingface_hub client use this endpoint and a private cache.

    huggingface_hub reads HF_ENDPOINT (and the cache and token paths) once, at import, into module
    constants and into the default `HfApi` instance, so setting the variable is not enough.
    """
    import huggingface_hub
    from huggingface_hub import constants, hf_api

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(hf_api.api, "endpoint", url)
    monkeypatch.setattr(huggingface_hub.file_download.constants, "ENDPOINT", url, raising=False)


@pytest.fixture
def hub_server(monkeypatch, tmp_path_factory):
    """A running loopback Hub; HF_ENDPOINT and the client point at it for the test's duration."""
    hub = LoopbackHub().start()
    point_client_at(monkeypatch, hub.url, tmp_path_factory.mktemp("hf_home"))
    try:
        yield hub
    finally:
        hub.stop()
