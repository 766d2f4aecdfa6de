"""The registry against a local HTTP server on 127.0.0.1: no test touches the internet."""
import gzip
import hashlib
import http.server
import os
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers import data
from helpers.data import Archive, ChecksumError, Dataset, DownloadError, File, NotAvailableLocally, fetch

GOOD = b"the quick brown fox\n" * 100


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if self.path.startswith("/truncated"):
            self.send_header("Content-Length", str(len(body) * 2))  # promise more than we send
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.path.startswith("/truncated"):
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    tar_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"course-test-{os.getpid()}.tar.gz"
    with tarfile.open(tar_path, "w:gz") as t:
        info = tarfile.TarInfo("inner/member.txt")
        info.size = len(GOOD)
        import io

        t.addfile(info, io.BytesIO(GOOD))
    Handler.files = {"/good.txt": GOOD, "/corrupt.txt": GOOD[:-1] + b"X", "/truncated.txt": GOOD,
                     "/archive.tar.gz": tar_path.read_bytes()}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    tar_path.unlink()


def one_file(url, checksum=sha(GOOD), name="toy"):
    return Dataset(name, "test", (File("a.txt", checksum, url),))


def test_download_good_file(server, tmp_path):
    folder = fetch(one_file(server + "/good.txt"), cache=tmp_path, mirror=tmp_path / "no-mirror")
    assert (folder / "a.txt").read_bytes() == GOOD
    assert [p.name for p in folder.iterdir()] == ["a.txt"]  # no temp files left behind
    # second call: served from the cache, no server needed
    assert fetch(one_file("http://127.0.0.1:9/never"), cache=tmp_path, mirror=tmp_path / "x") == folder


def test_corrupt_download_is_rejected_and_not_kept(server, tmp_path):
    with pytest.raises(ChecksumError, match=r"(?s)a.txt.*expected sha256:.*actual   sha256:"):
        fetch(one_file(server + "/corrupt.txt"), cache=tmp_path, mirror=None)
    assert list((tmp_path / "toy").iterdir()) == []


def test_truncated_transfer(server, tmp_path):
    with pytest.raises(DownloadError, match="truncated|broke off"):
        fetch(one_file(server + "/truncated.txt"), cache=tmp_path, mirror=None)
    assert list((tmp_path / "toy").iterdir()) == []


def test_server_down_names_url_and_mirror_variable(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/good.txt"
    with pytest.raises(DownloadError, match=rf"(?s){url}.*COURSE_DATA_DIR"):
        fetch(one_file(url), cache=tmp_path, mirror=None)


def test_archive_member(server, tmp_path):
    ds = Dataset("arc", "test", (File("member.txt", sha(GOOD), archive="a.tar.gz", member="inner/member.txt"),),
                 (Archive("a.tar.gz", server + "/archive.tar.gz"),))
    folder = fetch(ds, cache=tmp_path, mirror=None)
    assert (folder / "member.txt").read_bytes() == GOOD


def test_mirror_is_used_and_never_modified(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "toy").mkdir(parents=True)
    (mirror / "toy" / "a.txt").write_bytes(GOOD)
    assert fetch(one_file("http://127.0.0.1:9/unused"), cache=tmp_path / "c", mirror=mirror) == mirror / "toy"
    # a corrupt mirror file: clear error, file left in place
    (mirror / "toy" / "a.txt").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="mirror was left untouched"):
        fetch(one_file("http://127.0.0.1:9/unused"), cache=tmp_path / "c", mirror=mirror)
    assert (mirror / "toy" / "a.txt").read_bytes() == b"tampered"


def test_course_data_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert data.mirror_root() == tmp_path


def test_not_available_locally(tmp_path):
    with pytest.raises(NotAvailableLocally, match="a.txt"):
        fetch(one_file("http://127.0.0.1:9/x"), download_missing=False, cache=tmp_path, mirror=None)


def test_mirror_only_dataset_explains_itself(tmp_path):
    ds = Dataset("only-mirror", "test", (File("a.txt", sha(GOOD)),))
    with pytest.raises(NotAvailableLocally, match="COURSE_DATA_DIR"):
        fetch(ds, cache=tmp_path, mirror=None)


def test_unknown_dataset_lists_known():
    with pytest.raises(data.UnknownDatasetError, match="known: .*mnist.*tinyshakespeare"):
        fetch("imagenet")


def test_every_file_declares_a_source_and_checksum():
    for ds in data.DATASETS.values():
        for f in ds.files:
            algo, hexd = f.checksum.split(":")
            assert algo in {"sha256", "md5"} and len(hexd) == {"sha256": 64, "md5": 32}[algo]
            assert f.url or f.archive or ds.name == "cifar-10-subset", f


def test_read_idx_rejects_bad_files(tmp_path):
    good = tmp_path / "ok.gz"
    header = bytes([0, 0, 8, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    good.write_bytes(gzip.compress(header + bytes(range(6))))
    assert data.read_idx(good).tolist() == [[0, 1, 2], [3, 4, 5]]
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(data.DataError, match="not an unsigned-byte IDX"):
        data.read_idx(bad_magic)
    short = tmp_path / "short"
    short.write_bytes(header + bytes(5))
    with pytest.raises(data.DataError, match="header says"):
        data.read_idx(short)


# ---- the real datasets, from the mirror (skipped where no mirror is configured) ----------------------

needs_mirror = pytest.mark.skipif(data.mirror_root() is None, reason="no dataset mirror (COURSE_DATA_DIR)")


@needs_mirror
def test_load_mnist():
    (x, y), (xt, yt) = data.load_mnist()
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the famous first labels
    assert np.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_mirror
def test_load_cifar10_subset_says_so(capsys):
    (x, y), (xt, yt), info = data.load_cifar10()
    assert x.shape[1:] == (32, 32, 3) and x.dtype == np.uint8 and xt.shape == (10000, 32, 32, 3)
    assert info["classes"] == data.CIFAR10_CLASSES
    if info["source"] == "subset":
        assert not info["exact"] and len(x) == 10000 and "JPEG" in capsys.readouterr().out
    assert np.bincount(yt).tolist() == [1000] * 10


@needs_mirror
def test_text_datasets():
    assert len(data.load_names()) == 32033
    assert data.load_text("tinyshakespeare").startswith("First Citizen:")
    wt = data.load_wikitext2()
    assert set(wt) == {"train", "valid", "test"} and len(wt["train"]) > 10_000_000
    sst = data.load_sst2()
    assert len(sst["train"]) == 67349 and len(sst["dev"]) == 872 and {y for _, y in sst["dev"]} == {0, 1}
    m = data.load_multi30k()
    assert [len(m[s]) for s in ("train", "valid", "test")] == [29000, 1014, 1000]
    with pytest.raises(data.UnknownDatasetError):
        data.load_text("nope")


@needs_mirror
def test_tiktoken_offline_matches_known_ids():
    assert data.tiktoken_encoding("gpt2").encode("Hello world") == [15496, 995]
    assert data.tiktoken_encoding("cl100k_base").encode("Hello world") == [9906, 1917]
    with pytest.raises(data.UnknownDatasetError):
        data.tiktoken_encoding("o200k_base")
