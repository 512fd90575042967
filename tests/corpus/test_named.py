"""Download tests against a server on 127.0.0.1 that serves ../shared's Tiny Shakespeare."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lmcli.corpus import named
from lmcli.corpus.named import CorpusRecipe, fetch, load_catalog, resolve_corpus
from lmcli.errors import DownloadError, InputError

SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


class _Server:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.mode = "ok"  # ok | truncate | corrupt
        self.hits = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                body = server.body
                if server.mode == "corrupt":
                    body = body[:-5] + b"XXXXX"
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                if server.mode == "truncate":
                    self.wfile.write(body[: len(body) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/input.txt"


@pytest.fixture
def server(shakespeare_path: Path) -> Iterator[_Server]:
    srv = _Server(shakespeare_path.read_bytes())
    thread = threading.Thread(target=srv.httpd.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def recipe(server: _Server) -> CorpusRecipe:
    """Tiny Shakespeare as a corpus that is downloaded (no bundled copy), from 127.0.0.1."""
    return replace(load_catalog()["shakespeare"], url=server.url, bundled=None)


def test_catalog_has_tiny_shakespeare() -> None:
    recipe = load_catalog()["shakespeare"]
    assert recipe.bytes == 1_115_394
    assert recipe.sha256 == SHAKESPEARE_SHA256
    assert recipe.url.startswith("https://")


def test_download_verifies_caches_and_reports_progress(
    server: _Server, recipe: CorpusRecipe, tmp_path: Path
) -> None:
    seen: list[tuple[int, int]] = []
    path = fetch(recipe, tmp_path, lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "tinyshakespeare.txt"
    assert path.read_bytes() == server.body
    assert seen[-1] == (recipe.bytes, recipe.bytes)
    assert fetch(recipe, tmp_path) == path
    assert server.hits == 1  # the second call used the cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tinyshakespeare.txt"]


def test_checksum_mismatch_keeps_nothing(
    server: _Server, recipe: CorpusRecipe, tmp_path: Path
) -> None:
    server.mode = "corrupt"
    with pytest.raises(DownloadError, match="failed its check"):
        fetch(recipe, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_keeps_nothing(
    server: _Server, recipe: CorpusRecipe, tmp_path: Path
) -> None:
    server.mode = "truncate"
    with pytest.raises(DownloadError, match=r"interrupted|failed its check"):
        fetch(recipe, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_cached_copy_is_fetched_again(
    server: _Server, recipe: CorpusRecipe, tmp_path: Path
) -> None:
    (tmp_path / recipe.filename).write_text("not shakespeare")
    path = fetch(recipe, tmp_path)
    assert path.read_bytes() == server.body
    assert server.hits == 1


def test_offline_says_how_to_pass_a_local_file(recipe: CorpusRecipe, tmp_path: Path) -> None:
    offline = replace(recipe, url="http://127.0.0.1:9/input.txt")  # a closed port
    with pytest.raises(DownloadError, match="could not download shakespeare") as info:
        fetch(offline, tmp_path)
    assert "local copy" in (info.value.hint or "")
    assert list(tmp_path.iterdir()) == []


def test_resolve_prefers_files_then_names(
    monkeypatch: pytest.MonkeyPatch, recipe: CorpusRecipe, tmp_path: Path
) -> None:
    monkeypatch.setattr(named, "load_catalog", lambda: {"shakespeare": recipe})
    monkeypatch.setenv("LMCLI_DATA_DIR", str(tmp_path / "cache"))
    resolved = resolve_corpus("shakespeare")
    assert resolved.path == tmp_path / "cache" / "tinyshakespeare.txt"
    assert resolved.name == "shakespeare"
    local = tmp_path / "mine.txt"
    local.write_text("hello\n")
    assert resolve_corpus(str(local)).name == "mine"
    with pytest.raises(InputError, match="no such file or named corpus: nope"):
        resolve_corpus("nope")


def test_the_bundled_copy_needs_no_network(tmp_path: Path, shakespeare_path: Path) -> None:
    """Tiny Shakespeare ships in the package: fetching it unpacks and verifies that copy, and
    never opens the URL (here a closed port)."""
    recipe = replace(load_catalog()["shakespeare"], url="http://127.0.0.1:9/input.txt")
    assert recipe.bundled == "tinyshakespeare.txt.bz2"
    seen: list[tuple[int, int]] = []
    path = fetch(recipe, tmp_path, lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == shakespeare_path.read_bytes()
    assert seen[-1] == (recipe.bytes, recipe.bytes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tinyshakespeare.txt"]


def test_a_damaged_bundled_copy_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    recipe = replace(load_catalog()["shakespeare"], url="http://127.0.0.1:9/input.txt")
    damaged = tmp_path / "pkg" / "tinyshakespeare.txt.bz2"
    damaged.parent.mkdir()
    damaged.write_bytes(b"BZh9" + b"not bz2 data" * 10)
    monkeypatch.setattr(named, "_CHECKOUT_DATA", damaged.parent)
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"bundled copy .* cannot be read"):
        fetch(recipe, cache)
    assert list(cache.iterdir()) == []
