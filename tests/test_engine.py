"""The engine: every output equals `generate` alone whatever the batch, preemption, parallel sampling, policies."""
import random

import pytest
import torch

from helpers.models.llama import Llama, LlamaConfig
from helpers.serving.engine import Engine, SamplingParams, replay
from helpers.serving.kv_cache import generate
from helpers.serving.scheduler import admit

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, dim=48, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, max_seq_len=256,
                      tie_embeddings=False)  # random tied embeddings would just echo the last token
    m = Llama(cfg).eval()
    with torch.no_grad():
        m.lm_head.weight.mul_(4)  # logits with a spread (std ~2): greedy outputs vary, argmax ties are rare
    return m


def prompts(n, seed=0, lo=3, hi=40):
    rng = random.Random(seed)
    return [[rng.randrange(97) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def run_all(engine, ps, params):
    ids = [engine.add_request(p, params[i] if isinstance(params, list) else params) for i, p in enumerate(ps)]
    while engine.has_unfinished():
        engine.step()
        engine.allocator.check_invariants([s.table.blocks for s in engine.scheduler.running])
    return [engine.outputs(r) for r in ids]


@pytest.mark.parametrize("policy", ["continuous", "static"])
def test_greedy_outputs_equal_generate_alone(model, policy):
    ps = prompts(10)
    lens = [random.Random(i).randint(1, 20) for i in range(10)]
    eng = Engine(model, num_blocks=64, block_size=4, max_num_seqs=4, max_num_batched_tokens=32, policy=policy)
    got = run_all(eng, ps, [SamplingParams(max_tokens=n) for n in lens])
    assert [g[0] for g in got] == [generate(model, p, n) for p, n in zip(ps, lens)]
    assert eng.allocator.num_free == 64 and eng.stats()["running"] == eng.stats()["waiting"] == 0


def test_chunked_prefill_respects_the_token_budget(model):
    eng = Engine(model, num_blocks=64, block_size=4, max_num_batched_tokens=8)
    p = prompts(1, lo=30, hi=30)[0]
    got = run_all(eng, [p, p[:5]], SamplingParams(max_tokens=5))
    assert all(sum(n for *_, n in s["seqs"]) <= 8 for s in eng.step_log)
    assert got[0][0] == generate(model, p, 5) and got[1][0] == generate(model, p[:5], 5)


def test_preemption_by_recompute_keeps_outputs(model):
    ps = prompts(8, seed=1, lo=8, hi=12)
    eng = Engine(model, num_blocks=14, block_size=4, max_num_seqs=8)  # far too few blocks for 8 x ~40 tokens
    got = run_all(eng, ps, SamplingParams(max_tokens=30))
    assert eng.stats()["preemptions"] > 0
    assert [g[0] for g in got] == [generate(model, p, 30) for p in ps]
    assert eng.allocator.num_free == 14


def test_eos_and_stop_tokens(model):
    p = prompts(1, seed=2)[0]
    ref = generate(model, p, 12)
    eng = Engine(model, num_blocks=32, block_size=4, eos_token_id=ref[3])
    assert run_all(eng, [p], SamplingParams(max_tokens=12))[0][0] == ref[:ref.index(ref[3]) + 1]
    eng = Engine(model, num_blocks=32, block_size=4)
    rid = eng.add_request(p, SamplingParams(max_tokens=12, stop_token_ids=(ref[5],)))
    outs = []
    while eng.has_unfinished():
        outs += eng.step()
    assert outs[-1].finish_reason == "stop" and eng.outputs(rid)[0] == ref[:ref.index(ref[5]) + 1]


def test_parallel_sampling_forks_and_copies_on_write(model):
    p = prompts(1, seed=3, lo=10, hi=10)[0]  # 10 tokens: blocks of 4 -> the last block is half full
    params = SamplingParams(max_tokens=8, temperature=1.0, top_p=0.9, seed=7, n=3)
    eng = Engine(model, num_blocks=32, block_size=4)
    eng.add_request(p, params, request_id="a")
    eng.step()  # prefill once, fork into 3 samples sharing the 3 prompt blocks
    assert len(eng.scheduler.running) == 3 and eng.allocator.num_free == 32 - 3
    assert all(s.table.blocks == eng.scheduler.running[0].table.blocks for s in eng.scheduler.running)
    eng.step()  # the two first writers into the shared half-full block copy it; the last writes in place
    assert eng.num_cow_copies == 2 and eng.allocator.num_free == 32 - 5
    while eng.has_unfinished():
        eng.step()
    samples = eng.outputs("a")
    assert len(samples) == 3 and len({tuple(s) for s in samples}) > 1
    # reproducible: same seed, different company in the batch, and even under preemption
    other = Engine(model, num_blocks=12, block_size=4, max_num_seqs=8)
    for q in prompts(4, seed=9, lo=4, hi=9):
        other.add_request(q, SamplingParams(max_tokens=8))
    other.add_request(p, params, request_id="a")
    while other.has_unfinished():
        other.step()
    assert other.outputs("a") == samples and other.stats()["preemptions"] > 0


def test_prefix_sharing_saves_blocks_and_keeps_outputs(model):
    system = prompts(1, seed=4, lo=16, hi=16)[0]
    ps = [system + q for q in prompts(4, seed=5, lo=2, hi=6)]
    eng = Engine(model, num_blocks=64, block_size=4, max_num_batched_tokens=64)
    got = run_all(eng, ps, SamplingParams(max_tokens=6))  # all admitted in the same step
    assert eng.stats()["prefix_blocks_shared"] == 3 * 4  # 4 full system-prompt blocks, 3 later requests
    assert eng.stats()["tokens_computed"] == sum(len(p) for p in ps) - 3 * 16 + 4 * 5
    assert [g[0] for g in got] == [generate(model, p, 6) for p in ps]
    # a chunked prefill publishes a block only once it is computed: with a budget of 10 tokens per step, the 2nd
    # request cannot reuse blocks the 1st has not reached yet, and the outputs stay exact
    eng = Engine(model, num_blocks=64, block_size=4, max_num_batched_tokens=10)
    got = run_all(eng, ps, SamplingParams(max_tokens=6))
    assert [g[0] for g in got] == [generate(model, p, 6) for p in ps] and eng.stats()["prefix_blocks_shared"] > 0


def test_static_runs_batches_to_completion(model):
    """Offline trace (all at t=0): static takes exactly sum over batches of (prefill + longest output - 1) steps."""
    ps = prompts(8, seed=6, lo=4, hi=8)
    lens = [1, 9, 2, 3, 12, 1, 1, 2]
    steps = {}
    for policy in ("static", "continuous"):
        eng = Engine(model, num_blocks=64, block_size=4, max_num_seqs=4, policy=policy)
        run_all(eng, ps, [SamplingParams(max_tokens=n) for n in lens])
        steps[policy] = eng.num_steps
    assert steps["static"] == max(lens[:4]) + max(lens[4:])  # the prefill step yields each first token
    assert steps["continuous"] < steps["static"]


def test_custom_admission_rule_and_validation(model):
    eng = Engine(model, num_blocks=16, block_size=4, max_num_seqs=2)
    eng.scheduler.admit = lambda s, seq, n, need: admit(s, seq, n, need) and not s.running  # one at a time
    run_all(eng, prompts(3, seed=8), SamplingParams(max_tokens=3))
    assert max(len(s["seqs"]) for s in eng.step_log) == 1
    with pytest.raises(ValueError, match="at least one token"):
        eng.add_request([], SamplingParams())
    with pytest.raises(ValueError, match="exceeds the context"):
        eng.add_request([1] * 60, SamplingParams(max_tokens=5))  # 16 blocks x 4 = 64 tokens
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    rid = eng.add_request([1, 2, 3], SamplingParams(max_tokens=50))
    eng.step()
    assert eng.abort(rid)[0].finish_reason == "abort" and not eng.has_unfinished() and eng.allocator.num_free == 16


def test_replay_records_times(model):
    trace = [(0.0, p, SamplingParams(max_tokens=3)) for p in prompts(3)]
    trace.append((0.05, [5, 6], SamplingParams(max_tokens=2)))
    recs = replay(Engine(model, num_blocks=32, block_size=4), trace, max_seconds=30)
    assert [r["n_tokens"] for r in recs] == [3, 3, 3, 2]
    assert all(r["arrival"] <= r["first_token"] <= r["finish"] for r in recs)
    assert recs[3]["token_ids"] == generate(model, [5, 6], 2)


def test_flat_attention_equals_the_per_sequence_loop(model):
    """FlatPagedAttention (padded, batched) == PagedAttention (one sequence at a time), prefill and decode mixed."""
    from helpers.serving.paged_attention import FlatPagedAttention
    from helpers.serving.paged_attention import PagedAttention, PagedKVCache, SeqBatch, slots_for
    torch.manual_seed(1)
    H, Hkv, D, bs = 6, 2, 8, 4
    cache = PagedKVCache(1, 16, bs, Hkv, D)
    cache.k.normal_(), cache.v.normal_()
    tables, lens, new = [[3, 7, 1], [0], [9, 2]], [11, 3, 6], [1, 3, 6]  # decode, short prefill, whole prefill
    positions = torch.cat([torch.arange(n - m, n) for n, m in zip(lens, new)])
    ends = torch.tensor(new).cumsum(0).tolist()
    batch = SeqBatch(list(zip([0] + ends[:-1], ends)), tables, lens,
                     torch.cat([slots_for(t, torch.arange(n - m, n), bs) for t, n, m in zip(tables, lens, new)]),
                     positions)
    n = len(positions)
    q, k, v = torch.randn(n, H, D), torch.randn(n, Hkv, D), torch.randn(n, Hkv, D)
    flat = FlatPagedAttention(cache, batch)(0, q, k, v)
    loop = PagedAttention(cache, batch)(0, q, k, v)
    assert flat.shape == loop.shape and torch.allclose(flat, loop, atol=1e-6)
