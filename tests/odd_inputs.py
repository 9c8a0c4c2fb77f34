"""Hypothesis strategies for the text the open web puts in a row: odd URLs and odd captions.

Every per-row property test draws from here, so "odd" means the same thing in every step:
arbitrary Unicode, control characters, bidi marks, very long strings, hosts that are IPv6
literals (closed or not), IDNA-invalid or empty, ports out of range or not numbers, user info,
and schemes other than http(s).
"""
from __future__ import annotations

from hypothesis import strategies as st

# characters that break naive URL and text handling
ODD_CHARS = ["\x00", "\t", "\n", "\r", "\x0b", "\x1f", "\x7f", "\x85", "\u00a0", " ", "%", "%00", "%zz", "@", ":",
             "[", "]", "#", "?", "/", "\\", "'", '"', "<", ">", "\u200b", "\u200e", "\u200f", "\u202a", "\u202b",
             "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\ufeff", "\ufffd", "\u0301",
             "\u2028", "ß", "ı", "K", "ﬀ", "１", "８０", "例", "\U0001f600"]
ODD_HOSTS = ["[::1", "[::1]", "[::1]]", "[[::1]", "[fe80::1%25eth0]", "[v1.x]", "[", "]", "", ".", "..", "a..b",
             "a" * 64 + ".com", "a" * 300, "xn--", "xn--zz.com", "xn--mnchen-3ya.de", "ß.de", "münchen.de",
             "\u202eevil.com", "exa mple.com", "ex\x00ample.com", "127.0.0.1", "0x7f.1", "999.999.999.999",
             "localhost", "-a-.com", "a_b.example.com", "例え.jp", "EXAMPLE.COM.", "example.com:80:90",
             "user@example.com", "@", "%41.com", "\u0130.com", "xn--ls8h.la"]
ODD_PORTS = ["", "0", "65535", "65536", "99999", "-1", "+1", " 80", "0x50", "８０", "80a", "9" * 30, ":"]
ODD_SCHEMES = ["http", "https", "HTTP", "hTtPs", "ftp", "file", "javascript", "data", "mailto", "", "ht tp",
               "http\x00", "h\u0301ttp", "ws"]

# (st.text over one alphabet is several times faster to draw than lists of mixed strategies)
odd_text = st.one_of(
    st.text(max_size=30),
    st.text(st.sampled_from([c for c in ODD_CHARS if len(c) == 1] + list("a.b:/@[]-")), max_size=30),
    st.builds(lambda a, odd, b: a + odd + b, st.text(max_size=12), st.sampled_from(ODD_CHARS), st.text(max_size=12)),
)
long_text = st.builds(lambda n, c: c * n, st.integers(1_000, 20_000), st.sampled_from(["a", "é", "/", "\u202e", "%"]))

hosts = st.one_of(st.sampled_from(["example.com", "img.example.org", "127.0.0.1", "[::1]"]), st.sampled_from(ODD_HOSTS),
                  odd_text,
                  st.lists(st.one_of(st.sampled_from(["a", "b", "xn--a", "", "-", "例"]), odd_text),
                           min_size=1, max_size=5).map(".".join))
ports = st.one_of(st.none(), st.sampled_from(ODD_PORTS), st.integers(-10, 10**12).map(str))
userinfo = st.one_of(st.none(), st.sampled_from(["user", "user:pass", "a@b", ":", "@"]), odd_text)
schemes = st.one_of(st.sampled_from(["http", "https"]), st.sampled_from(ODD_SCHEMES), odd_text)
paths = st.one_of(st.just(""), odd_text, long_text)


@st.composite
def structured_urls(draw, scheme_strategy=schemes) -> str:
    scheme, user, host, port, path = draw(scheme_strategy), draw(userinfo), draw(hosts), draw(ports), draw(paths)
    return (f"{scheme}://" + (f"{user}@" if user is not None else "") + host
            + (f":{port}" if port is not None else "") + "/" + path)


# http(s) URLs whose other parts are odd: these get past the scheme check
http_urls = structured_urls(st.sampled_from(["http", "https", "HTTP"]))
# what a URL cell of a real collection may hold
urls = st.one_of(structured_urls(), structured_urls(), odd_text, long_text, st.sampled_from(ODD_HOSTS))
captions = st.one_of(odd_text, long_text, st.lists(st.one_of(odd_text, st.sampled_from(["Madrid", "madrid's",
                                                                                          "MADRID", "Madridista"])),
                                                      max_size=6).map(" ".join))
