"""PagedAttention (helpers/serving/paged_attention.py): K/V in blocks, read through block tables, equals the
contiguous cache — shuffled blocks, partial last blocks, GQA, prefill and decode, several sequences in one batch."""
import pytest
import torch

from helpers.models.llama import Llama, causal_attention
from helpers.serving.kv_cache import generate
from helpers.serving.paged_attention import PagedAttention, PagedKVCache, SeqBatch, paged_attention, slots_for

torch.set_num_threads(1)
L, HKV, H, D, BS = 2, 2, 6, 8, 4  # layers, kv heads, q heads (GQA 3:1), head dim, block size


def shuffled_blocks(n_blocks, seed=0):
    return torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed)).tolist()


def test_slot_lookup_is_the_page_table_formula():
    table = [7, 2, 9]
    got = slots_for(table, torch.arange(10), BS)
    assert got.tolist() == [table[t // BS] * BS + t % BS for t in range(10)]
    with pytest.raises(ValueError, match="only 3 blocks"):
        slots_for(table, torch.tensor([12]), BS)


@pytest.mark.parametrize("length", [1, 4, 11])  # one token, exactly one block, a partial last block
def test_prefill_then_decode_through_a_shuffled_table_equals_contiguous(length):
    torch.manual_seed(length)
    cache = PagedKVCache(L, 12, BS, HKV, D)
    table = shuffled_blocks(12)[:4]  # non-contiguous, out-of-order physical blocks
    k, v = torch.randn(length + 1, HKV, D), torch.randn(length + 1, HKV, D)
    q = torch.randn(length + 1, H, D)
    pos = torch.arange(length)
    cache.write(1, slots_for(table, pos, BS), k[:length], v[:length])
    prefill = paged_attention(q[:length], cache, 1, table, length, pos)  # multi-token queries
    assert (prefill - causal_attention(q[:length], k[:length], v[:length], pos)).abs().max() <= 1e-5
    last = torch.tensor([length])
    cache.write(1, slots_for(table, last, BS), k[length:], v[length:])
    decode = paged_attention(q[length:], cache, 1, table, length + 1, last)  # one query over the whole past
    assert (decode - causal_attention(q[length:], k, v, last)).abs().max() <= 1e-5
    gk, gv = cache.gather(1, table, length + 1)
    assert torch.equal(gk, k) and torch.equal(gv, v)
    assert cache.k[0].abs().sum() == 0  # the other layer untouched


def make_batch(seqs):
    """seqs: (n_new, start, block_table) per sequence -> SeqBatch of the flat step."""
    slices, tables, clens, slots, pos, s = [], [], [], [], [], 0
    for n, start, table in seqs:
        p = torch.arange(start, start + n)
        slices.append((s, s + n)); tables.append(table); clens.append(start + n)
        slots.append(slots_for(table, p, BS)); pos.append(p)
        s += n
    return SeqBatch(slices, tables, clens, torch.cat(slots), torch.cat(pos))


def test_several_sequences_in_one_flat_batch_equal_each_alone():
    torch.manual_seed(0)
    blocks = shuffled_blocks(16, seed=3)
    tables = [blocks[0:3], blocks[3:7], blocks[7:8]]
    past = [5, 0, 2]  # tokens already cached (a decode-ish, a fresh prefill, a short one)
    new = [1, 9, 2]
    cache = PagedKVCache(L, 16, BS, HKV, D)
    K = [torch.randn(p + n, HKV, D) for p, n in zip(past, new)]
    V = [torch.randn(p + n, HKV, D) for p, n in zip(past, new)]
    for i in range(3):  # the sequences' past, already in the cache
        for layer in range(L):
            cache.write(layer, slots_for(tables[i], torch.arange(past[i]), BS), K[i][:past[i]], V[i][:past[i]])
    batch = make_batch([(n, p, t) for n, p, t in zip(new, past, tables)])
    backend = PagedAttention(cache, batch)
    q = torch.randn(sum(new), H, D)
    k_new = torch.cat([K[i][past[i]:] for i in range(3)])
    v_new = torch.cat([V[i][past[i]:] for i in range(3)])
    out = backend(0, q, k_new, v_new)  # (N, H, D)
    for i, (s, e) in enumerate(batch.slices):
        ref = causal_attention(q[s:e], K[i], V[i], batch.positions[s:e])
        assert (out[s:e] - ref).abs().max() <= 1e-5


def test_a_model_served_step_by_step_through_pages_equals_generate():
    from test_llama import tiny_hf_llama

    model = Llama.from_hf(tiny_hf_llama())
    cfg = model.cfg
    prompts = [[5, 17, 3, 88, 42, 7, 1], [9, 9, 2]]
    want = [generate(model, p, 8) for p in prompts]
    cache = PagedKVCache(cfg.n_layers, 10, BS, cfg.n_kv_heads, cfg.head_dim)
    blocks = shuffled_blocks(10, seed=1)
    tables = [blocks[:4], blocks[4:7]]
    seqs, out = [list(p) for p in prompts], [[], []]
    new = [len(p) for p in prompts]  # step 0 prefills both prompts in one batch, then both decode together
    with torch.no_grad():
        for _ in range(8):
            batch = make_batch([(n, len(s) - n, t) for n, s, t in zip(new, seqs, tables)])
            tokens = torch.tensor([tok for n, s in zip(new, seqs) for tok in s[len(s) - n:]])
            logits = model(tokens, batch.positions, PagedAttention(cache, batch))
            for i, (s, e) in enumerate(batch.slices):
                nxt = int(logits[e - 1].argmax())
                out[i].append(nxt)
                seqs[i].append(nxt)
            new = [1, 1]
    assert out == want


def test_copy_blocks_copies_every_layer():
    torch.manual_seed(0)
    cache = PagedKVCache(L, 4, BS, HKV, D)
    cache.k.normal_(), cache.v.normal_()
    cache.copy_blocks([(1, 3)])
    assert torch.equal(cache.k[:, 3], cache.k[:, 1]) and torch.equal(cache.v[:, 3], cache.v[:, 1])
    with pytest.raises(IndexError, match="out of range"):
        cache.copy_blocks([(0, 4)])


def test_bad_input_is_a_clear_error():
    cache = PagedKVCache(L, 4, BS, HKV, D)
    kv = torch.zeros(1, HKV, D)
    with pytest.raises(IndexError, match="slot out of range"):
        cache.write(0, torch.tensor([16]), kv, kv)
    with pytest.raises(IndexError, match="layer 2"):
        cache.write(2, torch.tensor([0]), kv, kv)
    with pytest.raises(ValueError, match="must be"):
        cache.write(0, torch.tensor([0, 1]), kv, kv)
    with pytest.raises(ValueError, match="same slot"):
        cache.write(0, torch.tensor([3, 3]), kv.repeat(2, 1, 1), kv.repeat(2, 1, 1))
    with pytest.raises(ValueError, match="only 2 blocks"):  # block table too short for the context
        cache.gather(0, [1, 2], 9)
    with pytest.raises(IndexError, match="block ids"):
        cache.gather(0, [1, 7], 5)
    with pytest.raises(ValueError, match="beyond context_len"):
        paged_attention(torch.zeros(1, H, D), cache, 0, [0, 1], 5, torch.tensor([5]))
    batch = make_batch([(3, 0, [2])])
    batch.slots[1] = 0  # a slot that is not where the block table puts position 1
    with pytest.raises(ValueError, match="disagree"):
        PagedAttention(cache, batch)
    with pytest.raises(ValueError, match="tile"):
        SeqBatch([(0, 2), (1, 3)], [[0], [1]], [2, 2], torch.arange(3), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="context_len"):
        SeqBatch([(0, 2)], [[0]], [1], torch.arange(2), torch.arange(2))
    with pytest.raises(ValueError, match=">= 1"):
        PagedKVCache(L, 0, BS, HKV, D)


def test_bytes_per_token_is_the_closed_form():
    cache = PagedKVCache(3, 5, BS, HKV, D, dtype=torch.float16)
    assert cache.bytes_per_token == 2 * 3 * HKV * D * 2
    assert cache.nbytes == cache.bytes_per_token * 5 * BS
