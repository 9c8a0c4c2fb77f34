"""Run the whole pipeline offline on a small generated sample, end to end.

Builds a RE-LAION-like parquet file under `<data-dir>/source/` (captions in several languages,
the city in many spellings, football noise, duplicates, broken URLs), serves its images from a
local HTTP server on 127.0.0.1 (one in eleven answers 404, like the web's dead links), then runs
steps 01 to 08 on it. The image URLs keep their real-looking host names (stock photo sites, news,
social media) so that step 04 has domains to count; inside the demo every host name resolves to
127.0.0.1, so nothing ever leaves the machine. CLIP runs with random weights (no download is possible offline), so the map's
layout means nothing; everything else is the real pipeline. Step 08 runs as a dry run: it prints
the Miro plan without a token.

    python demo.py
    python demo.py --data-dir data/demo --rows 20000 --city Madrid
"""
from __future__ import annotations

import argparse
import contextlib
import http.server
import importlib
import re
import socket
import sys
import threading
import time
from pathlib import Path

from common.paths import DataTree
from sample.images import demo_image
from sample.relaion import write_relaion_parquet

DEFAULT_DATA_DIR = Path("data/demo")
DEFAULT_MODEL = "ViT-B-32"
DEAD_LINK_EVERY = 11
IMAGE_PATH_RE = re.compile(r"^/img/s\d+-(\d+)\.jpg$")


# -----------------------------------------------------------------------------
# a local image host

class ImageHost(http.server.BaseHTTPRequestHandler):
    """Draws the demo picture for /img/s<seed>-<n>.jpg; some numbers are dead links."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        m = IMAGE_PATH_RE.match(self.path)
        if not m or int(m.group(1)) % DEAD_LINK_EVERY == 0:
            self.send_error(404)
            return
        body = demo_image(int(m.group(1)))
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the demo's output to the steps' own summaries
        pass


@contextlib.contextmanager
def everything_resolves_to_loopback():
    """The sample's hosts (and any other) are answered by the local image host, never the internet;
    name lookups work as before once the demo ends."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        return real("127.0.0.1", port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.getaddrinfo = real


def start_image_host() -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ImageHost)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# -----------------------------------------------------------------------------
# the steps

def steps(data_dir: str, source: Path, city: str, model: str = DEFAULT_MODEL) -> list[tuple[str, list[str]]]:
    d = ["--data-dir", data_dir]
    return [
        ("01_download_and_filter", d + ["--source", str(source), "--keywords", city]),
        ("02_analyze_text", d + ["--city", city]),
        ("03_clean_metadata", d + ["--exclude", "football", "soccer", "jersey", "stadium", "fútbol"]),
        ("04_analyze_urls", d),
        ("05_process_images", d + ["--model", model, "--pretrained", "none", "--allow-private-hosts",
                                   "--timeout", "5", "--retries", "1"]),
        ("06_reduce_dimensionality", d + ["--neighbors", "15"]),
        ("07_export_for_web", d + ["--poster-size", "2000", "--allow-private-hosts"]),
        ("08_upload_to_miro", d + ["--board", "demo-board", "--dry-run"]),
    ]


def run_step(module: str, argv: list[str]) -> None:
    print(f"\n=== {module} {' '.join(argv)}", flush=True)
    rc = importlib.import_module(module).main(argv)
    if rc != 0:
        raise SystemExit(f"demo stopped: {module} exited with {rc}")


def run_all(args, base_url: str) -> None:
    source = Path(args.data_dir) / "source" / "relaion-sample.parquet"
    # the image host's port changes every run, so the sample is rebuilt and the steps redo their work
    port = base_url.rsplit(":", 1)[1]
    write_relaion_parquet(source, args.rows, city=args.city, image_base_url=f"http://{{host}}:{port}",
                          language=True)
    print(f"sample: {args.rows:,} rows in {source}, images served from {base_url}")
    for module, step_argv in steps(args.data_dir, source, args.city, args.model):
        run_step(module, step_argv + ["--overwrite"] if module != "08_upload_to_miro" else step_argv)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", default=str(DEFAULT_DATA_DIR),
                   help=f"where the sample and every step's output go (default: {DEFAULT_DATA_DIR})")
    p.add_argument("--rows", type=int, default=6_000, help="rows in the generated source file (default 6,000)")
    p.add_argument("--city", default="Madrid", help="the city the sample's captions name (default Madrid)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"open_clip model for step 05, always with random weights (default {DEFAULT_MODEL})")
    args = p.parse_args(argv)

    started = time.time()
    server, base_url = start_image_host()
    try:
        with everything_resolves_to_loopback():
            run_all(args, base_url)
    finally:
        server.shutdown()
        server.server_close()

    tree = DataTree.at(args.data_dir)
    print(f"\ndemo finished in {time.time() - started:,.0f}s. Outputs:")
    for label, path in [("analysis (02, 04)", tree.analysis), ("cleaned rows (03)", tree.metadata_cleaned),
                        ("embeddings and tags (05)", tree.embeddings), ("map (06)", tree.projection_file),
                        ("poster (07)", tree.poster_file), ("Gephi (07)", tree.gexf_file)]:
        print(f"  {label:<26} {path}")
    print(f"  {'web viewer (07)':<26} python -m http.server -d {tree.export} 8000  ->  http://127.0.0.1:8000/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
