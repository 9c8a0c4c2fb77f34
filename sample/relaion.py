"""RE-LAION-like parquet files, generated: for the tests, the offline demo and the benchmarks.

The columns and types follow RE-LAION-5B's shards on the Hub (`COLUMNS`): the caption and its
scores, and what LAION's own download run recorded (`key`, `status`, `error_message`, the size of
its resized copy as `width`/`height`, the source image's as `original_width`/`original_height`,
`exif`, `md5`; all null where that run failed). `hub_files` names them as the Hub does
(`part-00000-<uuid>-c000.snappy.parquet`). The rows are
built to exercise the pipeline: the city in many spellings and positions ("Madrid's", "#madrid",
"MADRID", "Madrid-Barajas"), near misses that must not match ("Madridista"), a noise topic
(football for Madrid), captions in several languages, duplicates, null and very long captions,
and URLs that are broken, non-http, private or missing.

Every file starts with the same fixed "showcase" rows (see `showcase_rows`) so that small test
files contain each case; the rest is drawn from pools with numpy and assembled with pyarrow, so
the 5M-row benchmark file takes seconds, not minutes:

    python -m sample.relaion bench/out/relaion-5m.parquet --rows 5000000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROWS_PER_GROUP = 100_000
DEFAULT_CITY_SHARE = 0.05
NEAR_MISS_SHARE = 0.005
NULL_CAPTION_SHARE = 0.005
DUPLICATE_SHARE = 0.01

# (domain, category) pairs: step 04 groups them; a few are deliberately awkward to parse
DOMAINS = (
    "image.shutterstock.com", "c8.alamy.com", "media.istockphoto.com", "thumbs.dreamstime.com",
    "st.depositphotos.com", "imagenes.elpais.com", "ichef.bbci.co.uk", "static.independent.co.uk",
    "i.pinimg.com", "live.staticflickr.com", "pbs.twimg.com", "m.media-amazon.com",
    "i.ebayimg.com", "i.etsystatic.com", "ae01.alicdn.com", "blogger.googleusercontent.com",
    "i0.wp.com", "cdn.shopify.com", "upload.wikimedia.org", "www.example.es",
    "IMAGES.Example.COM:8080", "xn--espaa-rta.es", "203.0.113.7",
)
BAD_URLS = (None, "", "not a url", "ftp://files.example.com/pic.jpg", "javascript:alert(1)",
            "http://", "http://192.168.1.20/router.jpg", "http://127.0.0.1:9/local.jpg",
            "file:///etc/passwd", "data:image/png;base64,iVBORw0KGgo=")
LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "nl", "ja", "ru", "zh")

# caption templates that name the city: {c} Title case, {l} lower, {u} upper
CITY_TEMPLATES = {
    "en": ("{c}'s skyline at night", "Street food market in downtown {c}", "#{l} #travel #europe",
           "{u} CITY BREAK DEALS", "Aerial view of {c}, Spain", "Flights to {c}-Barajas airport",
           "Rainy afternoon in {c} (2019)", "The royal palace, {c}.", "Hotel near Gran Via, {c} centre",
           "vintage map of {l}", "{c} football club stadium tour", "Real {c} jersey 2024 home kit",
           "{c} derby: football fans celebrate the goal", "soccer match in {c} tonight"),
    "es": ("Vista de {c} desde el Palacio Real", "Plaza Mayor de {c} al atardecer",
           "Piso en venta en {c} centro", "Calle de Alcalá, {c}", "El metro de {c} en hora punta",
           "Camiseta fútbol Real {c} temporada 2023"),
    "fr": ("Vue de {c} au coucher du soleil", "Week-end à {c} : que visiter ?", "Le musée du Prado à {c}"),
    "de": ("Städtereise nach {c} im Frühling", "{c}: Sehenswürdigkeiten der Altstadt", "Fußball in {c}"),
    "it": ("Tramonto a {c}, Spagna", "Cosa vedere a {c} in 3 giorni"),
    "pt": ("Viagem a {c} com crianças", "Centro histórico de {c}"),
    "nl": ("Stedentrip {c} met de trein",),
    "ja": ("{c}の街並み", "スペイン {c} 旅行"),
    "ru": ("Вид на {c} ночью",),
    "zh": ("{c}街头摄影",),
}
# near misses: must never match the city as a whole word
NEAR_MISSES = ("{c}ista fan scarf, size L", "Los {l}istas celebran el título", "{c}leño typical breakfast",
               "{l}2024 promo code", "super{l} sale")
OTHER_CAPTIONS = {
    "en": ("Red apple on a wooden table", "Cute puppy playing in the garden", "Modern kitchen interior design",
           "Sunset over the ocean", "Men's leather wallet brown", "Abstract watercolor background",
           "Wedding dress with lace sleeves", "Mountain bike on a forest trail", "Coffee cup and notebook",
           "Barcelona beach in summer", "Paris Eiffel tower at dawn", "London bus on a rainy day"),
    "es": ("Paella valenciana tradicional", "Zapatos de mujer de piel", "Casa rural en la sierra",
           "Sevilla en primavera"),
    "fr": ("Tarte aux pommes maison", "Robe d'été à fleurs", "Lyon vu du ciel"),
    "de": ("Holztisch aus Eiche, massiv", "Berliner Mauer Graffiti", "Weihnachtsmarkt in München"),
    "it": ("Pizza margherita al forno a legna", "Roma, il Colosseo"),
    "pt": ("Praia em Lisboa", "Bolo de chocolate caseiro"),
    "nl": ("Fietsen langs de grachten van Amsterdam",),
    "ja": ("東京タワーの夜景", "抹茶ラテ"),
    "ru": ("Москва, Красная площадь", "Кошка спит на диване"),
    "zh": ("北京故宫", "上海外滩夜景"),
}


def _fill(template: str, city: str) -> str:
    return template.format(c=city, l=city.lower(), u=city.upper())


def showcase_rows(city: str = "Madrid") -> list[dict]:
    """The fixed first rows of every generated file: one of each case the pipeline must handle."""
    rows = []

    def add(caption, lang="en", url="https://image.shutterstock.com/z/stock-photo-{n}.jpg"):
        rows.append({"caption": caption, "language": lang, "url": url if url is None else url.format(n=len(rows))})

    for lang, templates in CITY_TEMPLATES.items():
        for t in templates:
            add(_fill(t, city), lang)
    for t in NEAR_MISSES:
        add(_fill(t, city), "es")
    add(None, "en")                                                    # null caption
    add("", "en")                                                      # empty caption
    add(("very long caption " * 400) + f"ending in {city}", "en")       # long, match at the very end
    add("x" * 6000, "en")                                              # long, no match
    add(f"{city.upper()}!!! {city.lower()}?? {city}...", "es")          # several hits in one caption
    add(f"{city}\nnew line and\ttab", "en")
    add(f"Flowers on a balcony in {city}", "en", url="https://i.pinimg.com/originals/dup.jpg")
    add(f"Flowers on a balcony in {city}", "en", url="https://i.pinimg.com/originals/dup.jpg")  # duplicate row
    for bad in BAD_URLS:
        add(f"Broken link to a {city} photo", "en", url=bad)
    for lang, captions in OTHER_CAPTIONS.items():
        add(captions[0], lang)
    return rows


def _pool(city: str) -> tuple[list[str], list[str], int, int]:
    """All pooled captions and their languages: city ones first, then near misses, then others."""
    captions, langs = [], []
    for lang, templates in CITY_TEMPLATES.items():
        captions += [_fill(t, city) for t in templates]
        langs += [lang] * len(templates)
    n_city = len(captions)
    captions += [_fill(t, city) for t in NEAR_MISSES]
    langs += ["es"] * len(NEAR_MISSES)
    for lang, others in OTHER_CAPTIONS.items():
        captions += list(others)
        langs += [lang] * len(others)
    return captions, langs, n_city, len(NEAR_MISSES)


def _random_part(n: int, city: str, rng: np.random.Generator, start: int,
                 city_share: float) -> dict[str, pa.Array]:
    captions, langs, n_city, n_near = _pool(city)
    n_other = len(captions) - n_city - n_near
    kind = rng.random(n)
    pick = np.where(kind < city_share, rng.integers(0, n_city, n),
                    np.where(kind < city_share + NEAR_MISS_SHARE, n_city + rng.integers(0, n_near, n),
                             n_city + n_near + rng.integers(0, n_other, n)))
    # a pooled caption plus a numeric suffix so rows differ, as real captions do
    suffix = pc.cast(pa.array(rng.integers(0, 1_000_000, n)), pa.string())
    caption = pc.binary_join_element_wise(pa.array(captions).take(pa.array(pick)),
                                          pc.binary_join_element_wise("photo", suffix, " "), " - ")
    caption = pc.if_else(pa.array(rng.random(n) < NULL_CAPTION_SHARE), pa.nulls(n, pa.string()), caption)
    language = pa.array(langs).take(pa.array(pick))
    keys = pc.cast(pa.array(np.arange(start, start + n)), pa.string())
    domain = pa.array(DOMAINS).take(pa.array(rng.integers(0, len(DOMAINS), n)))
    url = pc.binary_join_element_wise("https:/", domain, "images", pc.binary_join_element_wise(keys, ".jpg", ""), "/")
    # some rows repeat an earlier row's URL and caption (RE-LAION has duplicates)
    dup = np.flatnonzero(rng.random(n) < DUPLICATE_SHARE)
    if len(dup):
        idx = np.arange(n)
        idx[dup] = (dup * rng.random(len(dup))).astype(np.int64)
        take = pa.array(idx)
        url, caption, language = url.take(take), caption.take(take), language.take(take)
    return {"url": url, "caption": caption, "language": language}


# RE-LAION-5B's columns in the Hub's order, with the types this sample writes
COLUMNS = (("url", pa.string()), ("similarity", pa.float32()), ("hash", pa.int64()), ("pwatermark", pa.float32()),
           ("punsafe", pa.float32()), ("caption", pa.string()), ("key", pa.string()), ("status", pa.string()),
           ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
           ("original_width", pa.int32()), ("original_height", pa.int32()), ("exif", pa.string()), ("md5", pa.string()))
LAION_FAILED_SHARE = 0.08  # rows LAION's own download run could not fetch
LAION_RESIZE = 384  # the smaller side of LAION's resized copy (larger images only)
LAION_ERRORS = ("HTTP Error 404: Not Found", "HTTP Error 403: Forbidden", "<urlopen error timed out>",
                "image decoding error")
EXIFS = ('{"Image Make": "Canon", "Image Model": "Canon EOS 5D Mark III"}', '{"Image Orientation": "Horizontal (normal)"}')
HUB_SHARD = "part-{n:05d}-{uuid}-c000.snappy.parquet"
HUB_PARTS = 128  # shards per RE-LAION-5B subset


def hub_files(n: int = HUB_PARTS, seed: int = 0) -> list[str]:
    """Shard names as RE-LAION-5B's repos list them: Spark's part number and one job uuid."""
    rng = np.random.default_rng(seed)
    h = "".join(f"{b:02x}" for b in rng.integers(0, 256, 16, dtype=np.uint8))
    uuid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return [HUB_SHARD.format(n=i, uuid=uuid) for i in range(n)]


def _hex(rng: np.random.Generator, n: int, chars: int) -> pa.Array:
    digits = np.frombuffer(b"0123456789abcdef", np.uint8)[rng.integers(0, 16, (n, chars))]
    return pa.array(np.ascontiguousarray(digits).view(f"S{chars}").ravel()).cast(pa.string())


def _download_run(url: pa.Array, start: int, rng: np.random.Generator) -> dict[str, pa.Array]:
    """What LAION's download run recorded per row; its failures have no sizes, exif or md5."""
    n = len(url)
    failed = pc.or_(pc.invert(pc.fill_null(pc.match_substring_regex(url, r"^https?://[^/]+/.+"), False)),
                    pa.array(rng.random(n) < LAION_FAILED_SHARE))
    none = pa.nulls(n, pa.int32())
    ow = rng.integers(64, 4096, n)
    oh = (ow * rng.uniform(0.5, 1.5, n)).astype(np.int64)
    scale = np.minimum(1.0, LAION_RESIZE / np.minimum(ow, oh))
    sizes = {"width": np.rint(ow * scale), "height": np.rint(oh * scale), "original_width": ow, "original_height": oh}
    cols = {k: pc.if_else(failed, none, pa.array(v.astype(np.int32))) for k, v in sizes.items()}
    exif = pa.array(EXIFS).take(pa.array(rng.integers(0, len(EXIFS), n)))
    return {
        "key": pc.utf8_lpad(pc.cast(pa.array(np.arange(start, start + n)), pa.string()), 9, "0"),
        "status": pc.if_else(failed, "failed_to_download", "success"),
        "error_message": pc.if_else(failed, pa.array(LAION_ERRORS).take(pa.array(rng.integers(0, len(LAION_ERRORS), n))),
                                    pa.nulls(n, pa.string())),
        **cols,
        "exif": pc.if_else(pc.or_(failed, pa.array(rng.random(n) < 0.7)), pa.nulls(n, pa.string()), exif),
        "md5": pc.if_else(failed, pa.nulls(n, pa.string()), _hex(rng, n, 32)),
    }


def _scores(n: int, rng: np.random.Generator) -> dict[str, pa.Array]:
    return {
        "similarity": pa.array(rng.uniform(0.26, 0.45, n).astype(np.float32)),
        "hash": pa.array(rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)),
        "punsafe": pa.array(rng.beta(0.5, 20, n).astype(np.float32)),
        "pwatermark": pa.array(rng.beta(0.8, 4, n).astype(np.float32)),
    }


def relaion_table(n_rows: int, city: str = "Madrid", seed: int = 0, image_base_url: str | None = None,
                  city_share: float = DEFAULT_CITY_SHARE, language: bool = False) -> pa.Table:
    """A RE-LAION-like table of `n_rows` rows (the showcase rows first, then random rows).

    `language=True` adds a `language` label after `caption` (LAION-5B's multilingual subset had
    one; RE-LAION-5B's shards do not): the offline demo uses it to show per-language stop words.
    """
    rng = np.random.default_rng(seed)
    show = showcase_rows(city)[:n_rows]
    cols = {k: pa.array([r[k] for r in show], pa.string()) for k in ("url", "caption", "language")}
    rest = n_rows - len(show)
    if rest > 0:
        more = _random_part(rest, city, rng, len(show), city_share)
        cols = {k: pa.concat_arrays([cols[k], more[k]]) for k in cols}
    cols.update(_scores(n_rows, rng))
    cols.update(_download_run(cols["url"], 0, rng))  # LAION fetched the original URLs
    if image_base_url:
        cols["url"] = _local_urls(cols["url"], image_base_url.rstrip("/"), seed)
    fields = list(COLUMNS)
    if language:
        fields.insert(6, ("language", pa.string()))
    return pa.table({name: cols[name].cast(kind) for name, kind in fields})


def _local_urls(url: pa.Array, base: str, seed: int) -> pa.Array:
    """Point web URLs at a local image host; the deliberately bad ones stay as they are (the demo serves images).

    A `base` with "{host}" in it keeps every URL's host name and changes only port and path: the
    demo resolves those names to its local host, so domain analysis still sees real domains.
    """
    known_bad = pa.array([u for u in BAD_URLS if u is not None], pa.string())
    is_web = pc.and_(pc.fill_null(pc.match_substring_regex(url, r"^https?://[^/]+/.+"), False),
                     pc.invert(pc.is_in(url, value_set=known_bad)))
    codes = pc.cast(pc.index_in(url, value_set=pc.unique(url)), pa.string())  # duplicates share one URL
    if "{host}" in base:  # keep each URL's own host name, e.g. "http://{host}:8000"
        head, tail = base.split("{host}", 1)
        host = pc.struct_field(pc.extract_regex(url, r"^https?://(?P<h>[^/:]+)"), [0])
        base = pc.binary_join_element_wise(head, host, tail, "")
    local = pc.binary_join_element_wise(base, "img", pc.binary_join_element_wise(f"s{seed}-", codes, ".jpg", ""), "/")
    return pc.if_else(is_web, local, url)


def write_relaion_parquet(path, n_rows: int, city: str = "Madrid", seed: int = 0,
                          image_base_url: str | None = None, rows_per_group: int = ROWS_PER_GROUP,
                          city_share: float = DEFAULT_CITY_SHARE, language: bool = False) -> Path:
    """Write a RE-LAION-like parquet file (snappy, like the Hub's) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = relaion_table(n_rows, city, seed, image_base_url, city_share, language)
    pq.write_table(table, path, row_group_size=rows_per_group, compression="snappy")
    return path


def write_corrupt_parquet(path) -> Path:
    """A file named like a parquet shard that is not one (a truncated download)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PAR1" + b"\x15\x00" * 64)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write a RE-LAION-like parquet file.")
    p.add_argument("path", help="output parquet file")
    p.add_argument("--rows", type=int, default=100_000, help="number of rows (default 100,000)")
    p.add_argument("--city", default="Madrid", help="city named in the matching captions")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--rows-per-group", "--rows_per_group", dest="rows_per_group", type=int,
                   default=ROWS_PER_GROUP, help="parquet row group size")
    p.add_argument("--image-base-url", "--image_base_url", dest="image_base_url", default=None,
                   help="point image URLs at this local host, e.g. http://127.0.0.1:8000")
    p.add_argument("--language", action="store_true", help="add a per-row `language` label (LAION-5B multi style)")
    args = p.parse_args(argv)
    out = write_relaion_parquet(args.path, args.rows, args.city, args.seed, args.image_base_url, args.rows_per_group,
                                language=args.language)
    print(f"wrote {args.rows:,} rows to {out} ({out.stat().st_size / 1e6:,.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
