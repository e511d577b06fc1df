"""A loopback HTTP server that mimics the corpora's hosts, with faults to inject. Only 127.0.0.1 is used.

- static files with Range support (MAESTRO zip, LMD tarballs);
- a bitmidi.com look-alike: /api/midi/all, /robots.txt, /sitemap.xml, /<slug> pages, /uploads/<id>.mid;
- faults queued per path: ("drop", n) sends n body bytes then closes, ("status", code, retry_after), and a
  per-path byte rate for slow bodies.
Every request is logged with its path, query, Range header, bytes sent and time.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
import threading
import time
import zipfile
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Hit:
    path: str
    query: dict
    range: str | None
    time: float
    sent: int = 0
    status: int = 0


@dataclass
class Site:
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    rate: dict[str, float] = field(default_factory=dict)  # path -> bytes per second
    log: list[Hit] = field(default_factory=list)
    bitmidi: "Bitmidi | None" = None

    def start(self) -> "Site":
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                site._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def hits(self, path: str) -> list[Hit]:
        return [h for h in self.log if h.path == path]

    # -- serving -------------------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        hit = Hit(parts.path, parse_qs(parts.query), h.headers.get("Range"), time.monotonic())
        self.log.append(hit)
        fault = self.faults[parts.path].popleft() if self.faults[parts.path] else None
        if fault and fault[0] == "status":
            hit.status = fault[1]
            h.send_response(fault[1])
            if len(fault) > 2 and fault[2] is not None:
                h.send_header("Retry-After", str(fault[2]))
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        body = self.files.get(parts.path)
        ctype = "application/octet-stream"
        if body is None and self.bitmidi is not None:
            body, ctype = self.bitmidi.render(parts.path, hit.query)
            if body is not None and ctype == "application/xml":
                body = body.replace(b"{BASE}", self.base.encode())
        if body is None:
            hit.status = 404
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        start = 0
        if hit.range and hit.range.startswith("bytes="):
            start = int(hit.range[6:].split("-")[0])
            if start >= len(body):
                hit.status = 416
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(body)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            hit.status = 206
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            hit.status = 200
            h.send_response(200)
        payload = body[start:]
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(payload)))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        limit = fault[1] if fault and fault[0] == "drop" else len(payload)
        rate = self.rate.get(parts.path)
        step = 16384
        try:
            for i in range(0, limit, step):
                chunk = payload[i:min(i + step, limit)]
                h.wfile.write(chunk)
                hit.sent += len(chunk)
                if rate:
                    h.wfile.flush()
                    time.sleep(len(chunk) / rate)
        except (BrokenPipeError, ConnectionResetError):
            return
        if limit < len(payload):
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)


@dataclass
class Bitmidi:
    """bitmidi.com's shapes: records with id/name/slug/views/plays, the paged API, pages, sitemap, robots."""
    files: list[tuple[str, bytes]]  # (original name, bytes)
    robots: str = "User-agent: *\nAllow: /\n"
    api: bool = True

    def __post_init__(self):
        self.records = [{"id": 1000 + i, "name": name, "slug": _slug(name, 1000 + i), "views": 10 * i, "plays": i,
                         "alternateNames": [], "createdAt": "2019-01-01T00:00:00.000Z"}
                        for i, (name, _) in enumerate(self.files)]
        self.bytes = {f"/uploads/{r['id']}.mid": data for r, (_, data) in zip(self.records, self.files)}

    def render(self, path: str, query: dict) -> tuple[bytes | None, str]:
        if path == "/robots.txt":
            return self.robots.encode(), "text/plain"
        if path == "/api/midi/all":
            if not self.api:
                return None, ""
            page, size = int(query.get("page", ["0"])[0]), min(int(query.get("pageSize", ["15"])[0]), 50)
            results = self.records[page * size:(page + 1) * size]
            body = {"result": {"query": {"page": page, "pageSize": size}, "results": results,
                               "total": len(self.records), "pageTotal": math.ceil(len(self.records) / size)}}
            return json.dumps(body).encode(), "application/json"
        if path == "/sitemap.xml":
            locs = "".join(f"<url><loc>{{BASE}}/{r['slug']}</loc></url>" for r in self.records)
            return (f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                    f"<url><loc>{{BASE}}/</loc></url>{locs}</urlset>").encode(), "application/xml"
        if path in self.bytes:
            return self.bytes[path], "audio/midi"
        for r in self.records:
            if path == f"/{r['slug']}":
                html = (f"<html><head><title>{r['name']} - Free MIDI</title></head><body><h1>{r['name']}</h1>"
                        f'<a download="{r["name"]}" href="/uploads/{r["id"]}.mid">Download MIDI</a></body></html>')
                return html.encode(), "text/html"
        return None, ""


def _slug(name: str, id_: int) -> str:
    stem = name.rsplit(".", 1)[0]
    return "".join(c.lower() if c.isalnum() else "-" for c in stem).strip("-") + f"-{id_}"


# -- archives in the real layouts -------------------------------------------------------------------------
def maestro_zip(files: list[tuple[str, bytes]], extra: list[tuple[str, bytes]] = ()) -> bytes:
    """maestro-v3.0.0/<year>/<name>.midi plus the CSV and column-oriented JSON metadata."""
    rows = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (name, data) in enumerate(files):
            year = 2004 + i % 3
            rel = f"{year}/{name.rsplit('.', 1)[0]}.midi"
            zf.writestr(f"maestro-v3.0.0/{rel}", data)
            rows.append({"canonical_composer": f"Composer {i % 2}", "canonical_title": f"Piece {i}",
                         "split": ("train", "validation", "test")[i % 3], "year": year, "midi_filename": rel,
                         "audio_filename": rel.replace(".midi", ".wav"), "duration": 60.0 + i})
        cols = list(rows[0])
        csv = ",".join(cols) + "\n" + "".join(",".join(f'"{r[c]}"' for c in cols) + "\n" for r in rows)
        zf.writestr("maestro-v3.0.0/maestro-v3.0.0.csv", csv)
        zf.writestr("maestro-v3.0.0/maestro-v3.0.0.json",
                    json.dumps({c: {str(i): r[c] for i, r in enumerate(rows)} for c in cols}))
        for name, data in extra:
            zf.writestr(name, data)
    return buf.getvalue()


def lmd_tar(files: list[bytes], layout: str = "lmd_full", names: list[str] | None = None) -> bytes:
    """lmd_full/<h>/<md5>.mid, or clean_midi/<Artist>/<Title>.mid when names are given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i, data in enumerate(files):
            md5 = hashlib.md5(data).hexdigest()
            name = f"{layout}/{names[i]}" if names else f"{layout}/{md5[0]}/{md5}.mid"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()
