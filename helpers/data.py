"""The dataset registry: every dataset of the course declared once, fetched verified, loaded as numpy/text.

`fetch(name)` returns a local folder holding the dataset's files, each checked against its published
checksum. Where it looks, in order:

1. the mirror named by `COURSE_DATA_DIR` (`<mirror>/<name>/<file>`; CI points it at `../shared/datasets`);
2. the cache, `datasets/<name>/` in the repository (git-ignored);
3. the canonical URL, downloaded with a progress bar into the cache (temp file, then rename), verified.

Nothing the user put in the mirror is ever modified or deleted.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .session import ROOT

CACHE = ROOT / "datasets"


class DataError(RuntimeError):
    """Base class: something is wrong with a dataset's files."""


class UnknownDatasetError(DataError, KeyError):
    def __str__(self):  # KeyError would repr() the message
        return self.args[0]


class ChecksumError(DataError):
    pass


class DownloadError(DataError):
    pass


class NotAvailableLocally(DataError):
    pass


# --------------------------------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Archive:
    """A downloadable archive whose members are some of a dataset's files."""

    name: str
    url: str
    checksum: str | None = None  # "sha256:<hex>" or "md5:<hex>"; None when none is published


@dataclass(frozen=True)
class File:
    """One file of a dataset: where it comes from and the checksum it must have."""

    name: str
    checksum: str  # "sha256:<hex>" or "md5:<hex>"
    url: str | None = None  # a direct download ...
    archive: str | None = None  # ... or a member of one of the dataset's archives
    member: str | None = None  # path inside that archive (default: `name`)


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    files: tuple[File, ...]
    archives: tuple[Archive, ...] = ()

    def archive(self, name: str) -> Archive:
        return next(a for a in self.archives if a.name == name)


def _sha(hexdigest: str) -> str:
    return f"sha256:{hexdigest}"


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_GH = "https://raw.githubusercontent.com/"
_OPENAI = "https://openaipublic.blob.core.windows.net/"
_MULTI30K = _GH + "neychev/small_DL_repo/master/datasets/Multi30k/"
_CIFAR_BATCHES = {  # canonical MD5s, as torchvision publishes them
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

DATASETS: dict[str, Dataset] = {d.name: d for d in [
    Dataset("mnist", "MNIST handwritten digits, IDX format (LeCun, Cortes, Burges)", (
        File("train-images-idx3-ubyte.gz", _sha("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"), _MNIST + "train-images-idx3-ubyte.gz"),
        File("train-labels-idx1-ubyte.gz", _sha("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"), _MNIST + "train-labels-idx1-ubyte.gz"),
        File("t10k-images-idx3-ubyte.gz", _sha("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"), _MNIST + "t10k-images-idx3-ubyte.gz"),
        File("t10k-labels-idx1-ubyte.gz", _sha("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"), _MNIST + "t10k-labels-idx1-ubyte.gz"),
    )),
    Dataset("cifar-10-batches-py", "CIFAR-10, the canonical python batches (Krizhevsky 2009)",
            tuple(File(n, f"md5:{h}", archive="cifar-10-python.tar.gz", member=f"cifar-10-batches-py/{n}")
                  for n, h in _CIFAR_BATCHES.items()),
            (Archive("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                     "md5:c58f30108f718f92721af3b95e74349a"),)),
    Dataset("cifar-10-subset", "CIFAR-10 as npz from JPEG-decoded images: full test set, class-balanced 10k train "
            "subset (only in the course mirror; see its MANIFEST.md)", (
        File("cifar10_train10k.npz", _sha("50edb83a84b0952b0987028be494e9f005921b26543d498290838b1512198ff2")),
        File("cifar10_test.npz", _sha("14fd606c6e80a6618c5bc0d5fce3a8a97af206c456d3d3cd8f8af1ae0b2d4736")),
    )),
    Dataset("tinyshakespeare", "Karpathy's char-rnn tiny Shakespeare (1.1 MB of plays)", (
        File("input.txt", _sha("86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
             _GH + "karpathy/char-rnn/master/data/tinyshakespeare/input.txt"),
    )),
    Dataset("names", "makemore's 32,033 names (US SSA baby names)", (
        File("names.txt", _sha("0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"),
             _GH + "karpathy/makemore/master/names.txt"),
    )),
    Dataset("wikitext-2", "WikiText-2 v1, tokenized (Merity et al.), as in pytorch/examples", tuple(
        File(f"{s}.txt", _sha(h), _GH + f"pytorch/examples/main/word_language_model/data/wikitext-2/{s}.txt")
        for s, h in [("train", "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f"),
                     ("valid", "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
                     ("test", "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0")])),
    Dataset("sst2", "GLUE SST-2 sentiment (Socher et al. 2013): train and dev TSVs", (
        File("train.tsv", _sha("48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1"),
             archive="SST-2.zip", member="SST-2/train.tsv"),
        File("dev.tsv", _sha("54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"),
             archive="SST-2.zip", member="SST-2/dev.tsv"),
    ), (Archive("SST-2.zip", "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"),)),
    Dataset("multi30k", "Multi30k WMT16 task 1 German-English (Elliott et al.), as torchtext serves it", (
        File("train.de", _sha("695df46f6fd14567e69970408a2c129a50e778a910ecb1585a92eb25b2c7accc"), archive="training.tar.gz"),
        File("train.en", _sha("4b4d37e774976ef44fecca1738cdeb3b3ba384851a59a755b9c5e6aa7d87b13c"), archive="training.tar.gz"),
        File("val.de", _sha("fd0fc009db2446cfc12d96a382aff0d3122cb47577b352d0f7e0bb3a38e2e552"), archive="validation.tar.gz"),
        File("val.en", _sha("40cd20974079d9afb0e3d27c659a8e059cc2fcf850b4bc23ede13fc36dd8a865"), archive="validation.tar.gz"),
        File("test2016.de", _sha("4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16"), archive="mmt_task1_test2016.tar.gz"),
        File("test2016.en", _sha("399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182"), archive="mmt_task1_test2016.tar.gz"),
    ), (
        Archive("training.tar.gz", _MULTI30K + "training.tar.gz",
                _sha("20140d013d05dd9a72dfde46478663ba05737ce983f478f960c1123c6671be5e")),
        Archive("validation.tar.gz", _MULTI30K + "validation.tar.gz",
                _sha("a7aa20e9ebd5ba5adce7909498b94410996040857154dab029851af3a866da8c")),
        Archive("mmt_task1_test2016.tar.gz", _MULTI30K + "mmt_task1_test2016.tar.gz",
                _sha("876a95a689a2a20b243666951149fd42d9bfd57cbbf8cd2c79d3465451564dd2")),
    )),
    Dataset("gpt2-bpe", "OpenAI GPT-2 byte-level BPE: encoder.json and vocab.bpe", (
        File("encoder.json", _sha("196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
             _OPENAI + "gpt-2/encodings/main/encoder.json"),
        File("vocab.bpe", _sha("1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
             _OPENAI + "gpt-2/encodings/main/vocab.bpe"),
    )),
    Dataset("tiktoken", "OpenAI cl100k_base BPE ranks (the GPT-4 tokenizer)", (
        File("cl100k_base.tiktoken", _sha("223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
             _OPENAI + "encodings/cl100k_base.tiktoken"),
    )),
]}


# --------------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------------

SIBLING_MIRROR = ROOT.parent / "shared" / "datasets"


def mirror_root() -> Path | None:
    """The local mirror: `COURSE_DATA_DIR` if set, else a `shared/datasets` folder beside the repo, else None."""
    value = os.environ.get("COURSE_DATA_DIR", "").strip()
    if value:
        return Path(value).expanduser()
    return SIBLING_MIRROR if SIBLING_MIRROR.is_dir() else None


def file_hash(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=None)
def _hash_once(path: str, size: int, mtime_ns: int, algorithm: str) -> str:
    return file_hash(Path(path), algorithm)


def verify(path: Path, checksum: str) -> str | None:
    """None if `path` has `checksum` ("sha256:…" / "md5:…"), else the actual hash (hashed once per file version)."""
    algorithm, expected = checksum.split(":", 1)
    st = path.stat()
    actual = _hash_once(str(path.resolve()), st.st_size, st.st_mtime_ns, algorithm)
    return None if actual == expected else f"{algorithm}:{actual}"


def _check(path: Path, checksum: str, where: str) -> None:
    actual = verify(path, checksum)
    if actual is not None:
        raise ChecksumError(f"checksum mismatch for {path} ({where}):\n  expected {checksum}\n  actual   {actual}\n"
                            + ("  The mirror was left untouched; replace the file there." if where == "mirror"
                               else "  Delete the file to download it again."))


def download(url: str, target: Path, checksum: str | None, timeout: float = 30.0) -> Path:
    """Download `url` to `target` atomically (temp file + rename) with a progress bar, then verify it."""
    from .progress import progress_bar

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError) as exc:
            raise DownloadError(
                f"could not download {url}: {getattr(exc, 'reason', exc)}.\n  Offline? Put the files in a mirror "
                f"folder laid out as <mirror>/<dataset>/<file> and set COURSE_DATA_DIR to it "
                f"(now: {os.environ.get('COURSE_DATA_DIR', '<unset>')}).") from exc
        with response, open(tmp, "wb") as out:
            expected = int(response.headers.get("Content-Length") or 0) or None
            got = 0
            with progress_bar(total=expected, unit="B", unit_scale=True, desc=target.name, leave=False) as bar:
                try:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        out.write(block)
                        got += len(block)
                        bar.update(len(block))
                except (OSError, urllib.error.URLError) as exc:  # e.g. http.client.IncompleteRead
                    raise DownloadError(f"download of {url} broke off after {got} bytes: {exc}") from exc
        if expected is not None and got != expected:
            raise DownloadError(f"download of {url} is truncated: {got} of {expected} bytes")
        if checksum is not None:
            actual = verify(tmp, checksum)
            if actual is not None:
                raise ChecksumError(f"checksum mismatch for {target.name} downloaded from {url}:\n"
                                    f"  expected {checksum}\n  actual   {actual}\n  Nothing was kept; try again.")
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def _extract(archive: Path, member: str, target: Path) -> None:
    """Copy one member out of a .tar.gz / .zip archive, atomically."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        if archive.name.endswith(".zip"):
            import zipfile

            with zipfile.ZipFile(archive) as z, z.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            with tarfile.open(archive) as t:
                src = t.extractfile(member)
                if src is None:
                    raise DataError(f"{archive.name} has no file {member!r}")
                with src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        os.replace(tmp, target)
    except KeyError as exc:
        raise DataError(f"{archive.name} has no member {member!r}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownDatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def fetch(name: str | Dataset, download_missing: bool = True, cache: Path | None = None,
          mirror: Path | None = None) -> Path:
    """The local folder holding every file of dataset `name`, verified (mirror, else cache, else download)."""
    ds = name if isinstance(name, Dataset) else dataset(name)
    mirror = mirror if mirror is not None else mirror_root()
    cache_dir = (cache if cache is not None else CACHE) / ds.name

    in_mirror = {}
    if mirror is not None and (mirror / ds.name).is_dir():
        for f in ds.files:
            path = mirror / ds.name / f.name
            if path.is_file():
                _check(path, f.checksum, "mirror")
                in_mirror[f.name] = path
        if len(in_mirror) == len(ds.files):
            return mirror / ds.name

    missing = [f for f in ds.files if f.name not in in_mirror and not (cache_dir / f.name).is_file()]
    if missing and not download_missing:
        raise NotAvailableLocally(f"{ds.name}: {', '.join(f.name for f in missing)} not in the mirror "
                                  f"({mirror or 'COURSE_DATA_DIR unset'}) nor in the cache ({cache_dir})")
    cache_dir.mkdir(parents=True, exist_ok=True)
    for f in ds.files:
        target = cache_dir / f.name
        if f.name in in_mirror:
            if not target.exists():
                target.symlink_to(in_mirror[f.name])
            continue
        if target.is_file():
            _check(target, f.checksum, "cache")
            continue
        if f.url:
            download(f.url, target, f.checksum)
        elif f.archive:
            arc = ds.archive(f.archive)
            arc_path = cache_dir / "_archives" / arc.name
            if mirror is not None and (mirror / ds.name / arc.name).is_file():
                arc_path = mirror / ds.name / arc.name
                if arc.checksum:
                    _check(arc_path, arc.checksum, "mirror")
            elif not arc_path.is_file():
                download(arc.url, arc_path, arc.checksum)
            _extract(arc_path, f.member or f.name, target)
            try:
                _check(target, f.checksum, "cache")
            except ChecksumError:
                target.unlink()
                raise
        else:
            raise NotAvailableLocally(
                f"{ds.name}/{f.name} has no public download; it comes only from the course mirror. "
                f"Set COURSE_DATA_DIR to a folder holding {ds.name}/{f.name}.")
    return cache_dir


# --------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (MNIST's format; gzip or raw): magic 0x0000 0x08 <ndim>, big-endian dims, uint8 data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} = {int(np.prod(dims))} bytes, file has {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def load_mnist():
    """`(x_train, y_train), (x_test, y_test)`: uint8 images (N, 28, 28), int64 labels; 60,000 / 10,000."""
    folder = fetch("mnist")
    x_train = read_idx(folder / "train-images-idx3-ubyte.gz")
    y_train = read_idx(folder / "train-labels-idx1-ubyte.gz").astype(np.int64)
    x_test = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return (x_train, y_train), (x_test, y_test)


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_batch(path: Path):
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    x = d[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3) uint8
    return np.ascontiguousarray(x), np.asarray(d[b"labels"], dtype=np.int64)


def load_cifar10(verbose: bool = True):
    """`(x_train, y_train), (x_test, y_test), info`: uint8 NHWC (N, 32, 32, 3), int64 labels.

    The canonical batches when they are local (mirror or cache); otherwise the mirror's `cifar-10-subset`
    (JPEG-decoded pixels, 10k train) when present; otherwise the canonical archive is downloaded.
    `info` says which: {"classes", "source": "canonical"|"subset", "exact": bool, "note"}.
    """
    try:
        folder = fetch("cifar-10-batches-py", download_missing=False)
    except NotAvailableLocally:
        try:
            folder = fetch("cifar-10-subset", download_missing=False)
        except NotAvailableLocally:
            folder = fetch("cifar-10-batches-py")
        else:
            train, test = np.load(folder / "cifar10_train10k.npz"), np.load(folder / "cifar10_test.npz")
            info = {"classes": [str(c) for c in train["classes"]], "source": "subset", "exact": False,
                    "note": "CIFAR-10 subset from the course mirror: 10,000-image class-balanced train set "
                            "(of 50,000) and the full 10,000-image test set; pixels are JPEG-decoded "
                            "(~30 dB PSNR), so accuracies are not directly comparable with published ones."}
            if verbose:
                print("Note:", info["note"])
            return ((train["images"], train["labels"].astype(np.int64)),
                    (test["images"], test["labels"].astype(np.int64)), info)
    parts = [_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _cifar_batch(folder / "test_batch")
    info = {"classes": list(CIFAR10_CLASSES), "source": "canonical", "exact": True,
            "note": "canonical CIFAR-10: 50,000 train / 10,000 test images"}
    return (x_train, y_train), (x_test, y_test), info


def load_text(name: str = "tinyshakespeare") -> str:
    """A single-file text dataset as one string (`tinyshakespeare`, `names`)."""
    files = {"tinyshakespeare": "input.txt", "names": "names.txt"}
    if name not in files:
        raise UnknownDatasetError(f"load_text knows {sorted(files)}; got {name!r}")
    return (fetch(name) / files[name]).read_text(encoding="utf-8")


def load_names() -> list[str]:
    """makemore's 32,033 lowercase names."""
    return load_text("names").splitlines()


def load_wikitext2() -> dict[str, str]:
    """WikiText-2 (tokenized, `<unk>` for rare words): {"train", "valid", "test"} -> text."""
    folder = fetch("wikitext-2")
    return {s: (folder / f"{s}.txt").read_text(encoding="utf-8") for s in ("train", "valid", "test")}


def load_sst2() -> dict[str, list[tuple[str, int]]]:
    """SST-2: {"train": 67,349, "dev": 872} lists of (sentence, label) with label 1 = positive."""
    folder = fetch("sst2")
    out = {}
    for split in ("train", "dev"):
        lines = (folder / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        if lines[0].split("\t") != ["sentence", "label"]:
            raise DataError(f"{split}.tsv: unexpected header {lines[0]!r}")
        rows = [line.rsplit("\t", 1) for line in lines[1:] if line]
        out[split] = [(s, int(y)) for s, y in rows]
    return out


def load_multi30k() -> dict[str, list[tuple[str, str]]]:
    """Multi30k: {"train": 29,000, "valid": 1,014, "test": 1,000} lists of (German, English) sentence pairs."""
    folder = fetch("multi30k")
    out = {}
    for split, stem in (("train", "train"), ("valid", "val"), ("test", "test2016")):
        de = (folder / f"{stem}.de").read_text(encoding="utf-8").rstrip("\n").split("\n")
        en = (folder / f"{stem}.en").read_text(encoding="utf-8").rstrip("\n").split("\n")
        if len(de) != len(en):
            raise DataError(f"multi30k {split}: {len(de)} German vs {len(en)} English lines")
        out[split] = list(zip(de, en))
    return out


def gpt2_bpe_files() -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe): OpenAI's GPT-2 tokenizer files."""
    folder = fetch("gpt2-bpe")
    return folder / "encoder.json", folder / "vocab.bpe"


def cl100k_file() -> Path:
    """cl100k_base.tiktoken: the GPT-4 tokenizer's base64 token -> rank file."""
    return fetch("tiktoken") / "cl100k_base.tiktoken"


# tiktoken looks its files up in TIKTOKEN_CACHE_DIR under sha1(url); these are the URLs it uses.
_TIKTOKEN_URLS = {
    "gpt2": {_OPENAI + "gpt-2/encodings/main/vocab.bpe": lambda: gpt2_bpe_files()[1],
             _OPENAI + "gpt-2/encodings/main/encoder.json": lambda: gpt2_bpe_files()[0]},
    "cl100k_base": {_OPENAI + "encodings/cl100k_base.tiktoken": cl100k_file},
}


def tiktoken_encoding(name: str):
    """A real `tiktoken.Encoding` ("gpt2" or "cl100k_base") built offline from the registry's files."""
    import tiktoken

    if name not in _TIKTOKEN_URLS:
        raise UnknownDatasetError(f"tiktoken_encoding knows {sorted(_TIKTOKEN_URLS)}; got {name!r}")
    cache_dir = ROOT / "cache" / "tiktoken"
    cache_dir.mkdir(parents=True, exist_ok=True)
    for url, source in _TIKTOKEN_URLS[name].items():
        target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
        if not target.exists():
            shutil.copyfile(source(), target)
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    try:
        return tiktoken.get_encoding(name)
    finally:
        if previous is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = previous
