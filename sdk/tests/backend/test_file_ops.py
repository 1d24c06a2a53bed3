"""FileOps and backend model URLs: local, file://, http(s):// and s3:// (a real moto server)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sedna.backend.base import BackendBase
from sedna.common.file_ops import FileOps, redact_url


class Files:
    """A local HTTP server serving ``files`` (path → bytes); others are 404."""

    def __init__(self, files: dict[str, bytes]) -> None:
        served = files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = served.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_files() -> Iterator[Callable[[dict[str, bytes]], Files]]:
    servers: list[Files] = []

    def start(files: dict[str, bytes]) -> Files:
        servers.append(Files(files))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_local_download_and_upload(tmp_path: Path) -> None:
    src = tmp_path / "a" / "model.bin"
    src.parent.mkdir()
    src.write_bytes(b"weights")
    assert FileOps.download(str(src)) == str(src)  # local, no dst: used in place
    copied = FileOps.download(f"file://{src}", str(tmp_path / "b" / "copy.bin"))
    assert Path(copied).read_bytes() == b"weights"
    (tmp_path / "dir").mkdir()
    into_dir = FileOps.download(str(src), str(tmp_path / "dir"))
    assert into_dir == str(tmp_path / "dir" / "model.bin")

    out = FileOps.upload(copied, str(tmp_path / "out" / "up.bin"))
    assert Path(out).read_bytes() == b"weights"
    assert not Path(copied).exists()  # clean=True removes the source, as upstream
    kept = FileOps.upload(str(src), str(tmp_path / "out2.bin"), clean=False)
    assert Path(kept).exists()
    assert src.exists()
    with pytest.raises(FileNotFoundError):
        FileOps.download(str(tmp_path / "nope"))


def test_tar_upload_and_unzip_download(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    (folder / "variables").mkdir(parents=True)
    (folder / "variables" / "v.bin").write_bytes(b"v")
    archive = FileOps.upload(str(folder), str(tmp_path / "store" / "saved.tar.gz"), tar=True)
    assert not folder.exists()
    fetched = FileOps.download(archive, str(tmp_path / "fetch" / "saved.tar.gz"), unzip=True)
    assert (Path(fetched).parent / "saved" / "variables" / "v.bin").read_bytes() == b"v"


def test_helpers() -> None:
    assert FileOps.join_path("s3://bucket/", "/models", "m.onnx") == "s3://bucket/models/m.onnx"
    assert FileOps.join_path("/a", "/b", "c") == "/a/b/c"
    assert FileOps.is_remote("s3://b/k")
    assert FileOps.is_remote("https://h/p")
    assert not FileOps.is_remote("/tmp/x")
    assert not FileOps.is_remote("https://host")
    assert FileOps.remove_path_prefix("/home/data/x", "/home/data/") == "/x"
    assert redact_url("https://user:secret@h:8/p?token=1") == "https://h:8/p"
    with pytest.raises(ValueError, match="gs:// is not supported"):
        FileOps.download("gs://bucket/key")


def test_http_model_url_is_downloaded_by_the_backend(
    http_files: Callable[[dict[str, bytes]], Files], tmp_path: Path
) -> None:
    server = http_files({"/models/m.txt": b"http-model"})
    seen: list[str] = []

    class Estimator:
        def load(self, model_url: str = "") -> None:
            seen.append(Path(model_url).read_text())

    backend = BackendBase(Estimator())
    backend.load(f"{server.url}/models/m.txt")
    assert seen == ["http-model"]
    assert backend.model_path is not None
    assert backend.model_path.endswith("m.txt")
    with pytest.raises(FileNotFoundError, match="HTTP 404"):
        backend.load(f"{server.url}/models/missing.txt?token=secret")
    with pytest.raises(FileNotFoundError) as info:
        FileOps.download(f"{server.url}/x/missing", str(tmp_path / "m"))
    assert "token" not in str(info.value)


def test_s3_model_url_roundtrip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("minio")
    from support.s3_server import moto_s3

    with moto_s3({"models/little/model.npy": b"placeholder"}, authenticated=True) as s3:
        monkeypatch.setenv("S3_ENDPOINT_URL", s3.url)
        monkeypatch.setenv("ACCESS_KEY_ID", s3.access_key)
        monkeypatch.setenv("SECRET_ACCESS_KEY", s3.secret_key)
        weights = tmp_path / "w.npy"
        np.save(weights, np.arange(3))
        assert FileOps.upload(str(weights), "s3://models/little/") == "s3://models/little/"

        class Estimator:
            loaded: Any = None

            def load(self, model_url: str = "") -> None:
                self.loaded = np.load(model_url, allow_pickle=False)

            def save(self, model_path: str) -> None:
                np.save(model_path, np.arange(5))

        backend = BackendBase(Estimator(), model_save_path="s3://models/little/w.npy")
        backend.load()
        assert backend.estimator.loaded.tolist() == [0, 1, 2]

        # A prefix downloads every object under it into a directory.
        folder = FileOps.download("s3://models/little", str(tmp_path / "all"))
        assert sorted(p.name for p in Path(folder).iterdir()) == ["model.npy", "w.npy"]

        # Saving with a remote model_save_path uploads the file there.
        assert backend.save(model_name="saved.npy") == "s3://models/little/w.npy/saved.npy"
        fetched = FileOps.download("s3://models/little/w.npy/saved.npy", str(tmp_path / "s.npy"))
        assert np.load(fetched).tolist() == [0, 1, 2, 3, 4]

        with pytest.raises(FileNotFoundError, match="no such object"):
            FileOps.download("s3://models/nothing-here", str(tmp_path / "x"))
        monkeypatch.setenv("SECRET_ACCESS_KEY", "wrong")
        with pytest.raises(FileNotFoundError, match=r"cannot download s3://models/little/w\.npy"):
            FileOps.download("s3://models/little/w.npy", str(tmp_path / "y"))
