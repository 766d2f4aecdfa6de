"""The block manager's invariants: no block leaked or shared wrongly, copy-on-write, all-or-nothing refusals."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.serving.block_allocator import BlockAllocator, BlockTable, OutOfBlocks, block_hashes


def state(alloc, tables):
    return (list(alloc._ref), list(alloc._free), dict(alloc._cached),
            [(list(t.blocks), t.num_tokens) for t in tables])


def test_allocate_free_refcount():
    a = BlockAllocator(3, 4)
    b0, b1 = a.allocate(), a.allocate()
    assert (b0, b1, a.num_free) == (0, 1, 1)
    a.fork(b0)
    assert a.refcount(b0) == 2
    a.free(b0)
    assert a.refcount(b0) == 1 and a.num_free == 1
    a.free(b0)
    assert a.num_free == 2
    with pytest.raises(ValueError, match="double free"):
        a.free(b0)
    with pytest.raises(ValueError, match="fork of free"):
        a.fork(b0)


def test_slots_follow_the_block_table():
    a = BlockAllocator(8, 4)
    other = BlockTable(a)
    other.append_slots(4)  # block 0 goes to someone else: the table below is not contiguous
    t = BlockTable(a)
    slots, copies = t.append_slots(6)
    assert t.blocks == [1, 2] and slots == [4, 5, 6, 7, 8, 9] and copies == []
    other.append_slots(1)  # block 3
    slots, _ = t.append_slots(3)
    assert t.blocks == [1, 2, 4] and slots == [10, 11, 16]
    assert t.num_tokens == 9 and t.blocks_needed(3) == 0 and t.blocks_needed(4) == 1


def test_fork_then_copy_on_write_of_the_partial_last_block():
    a = BlockAllocator(8, 4)
    parent = BlockTable(a)
    parent.append_slots(6)  # blocks [0, 1], block 1 half full
    child = parent.fork()
    assert a.refcount(0) == a.refcount(1) == 2 and a.num_free == 6
    assert child.blocks_needed(1) == 1  # the copy
    slots, copies = child.append_slots(1)
    assert copies == [(1, 2)] and child.blocks == [0, 2] and slots == [2 * 4 + 2]
    assert a.refcount(1) == 1 and a.refcount(0) == 2
    slots, copies = parent.append_slots(1)  # now the only owner of block 1: writes in place
    assert copies == [] and slots == [1 * 4 + 2]
    a.check_invariants([parent.blocks, child.blocks])


def test_full_shared_block_is_not_copied():
    a = BlockAllocator(4, 4)
    p = BlockTable(a)
    p.append_slots(4)
    c = p.fork()
    slots, copies = c.append_slots(1)
    assert copies == [] and c.blocks == [0, 1] and slots == [4]


def test_out_of_blocks_changes_nothing():
    a = BlockAllocator(3, 4)
    t, u = BlockTable(a), BlockTable(a)
    t.append_slots(6)
    u_child = t.fork()
    before = state(a, [t, u, u_child])
    with pytest.raises(OutOfBlocks):
        u.append_slots(9)  # needs 3 blocks, 1 free
    with pytest.raises(OutOfBlocks):
        u_child.append_slots(3)  # copy-on-write (1) + a new block (1) > 1 free
    assert state(a, [t, u, u_child]) == before
    u.append_slots(4)  # the refusal was recoverable: what fits still works
    a.check_invariants([t.blocks, u.blocks, u_child.blocks])


def test_prefix_sharing_by_content_hash():
    a = BlockAllocator(16, 4)
    prompt = list(range(10))
    hashes = block_hashes(prompt, 4)
    assert len(hashes) == 2 and block_hashes(prompt[:4] + [99] * 4, 4)[0] == hashes[0]
    assert block_hashes([99] * 4 + prompt[4:8], 4)[1] != hashes[1]  # same tokens, different prefix: not shared
    t1 = BlockTable(a)
    t1.append_slots(len(prompt))
    t1.publish(hashes, num_computed=len(prompt))
    t2 = BlockTable(a)
    assert t2.share_prefix(hashes) == 8 and t2.blocks == t1.blocks[:2] and a.prefix_hits == 2
    t2.append_slots(3)
    a.check_invariants([t1.blocks, t2.blocks])
    t1.free()
    t2.free()
    assert a.num_free == 16 and a._cached == {}  # a freed block forgets its content
    assert BlockTable(a).share_prefix(hashes) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append", "fork", "free", "share"]), st.integers(0, 7), st.integers(0, 9)),
                max_size=60))
def test_random_operations_keep_invariants(ops):
    """Random append / fork / free / prefix-share: every refcount equals its owners, nothing leaks, OOM is clean."""
    a = BlockAllocator(10, 4)
    memory = [None] * 40  # what each physical slot holds: the engine's writes and copies, simulated
    tables: list[BlockTable] = []
    tokens: list[list[int]] = []  # each table's token ids: a block is shared only with equal content
    for op, i, n in ops:
        if op == "append" or not tables:
            if not tables or i % 3 == 0:
                tables.append(BlockTable(a))
                tokens.append([])
            k = i % len(tables)
            before = state(a, tables)
            try:
                slots, copies = tables[k].append_slots(n)
                for src, dst in copies:
                    memory[dst * 4:(dst + 1) * 4] = memory[src * 4:(src + 1) * 4]
                new = [(i * 7 + j) % 3 for j in range(n)]
                for s, tok in zip(slots, new):
                    memory[s] = tok
                tokens[k] += new
                tables[k].publish(block_hashes(tokens[k], 4), len(tokens[k]))
            except OutOfBlocks:
                assert tables[k].blocks_needed(n) > a.num_free
                assert state(a, tables) == before
        elif op == "fork":
            k = i % len(tables)
            tables.append(tables[k].fork())
            tokens.append(list(tokens[k]))
        elif op == "free":
            k = i % len(tables)
            tables.pop(k).free()
            tokens.pop(k)
        else:  # a new sequence whose prompt repeats someone's tokens shares their full blocks
            k = i % len(tables)
            t = BlockTable(a)
            covered = t.share_prefix(block_hashes(tokens[k], 4))
            tables.append(t)
            tokens.append(tokens[k][:covered])
        a.check_invariants([t.blocks for t in tables])
        for t, toks in zip(tables, tokens):  # reading through the table gives back exactly its own tokens:
            assert t.num_tokens == len(toks) and len(t.blocks) == -(-len(toks) // 4)  # no write leaked into a
            assert [memory[t.blocks[p // 4] * 4 + p % 4] for p in range(len(toks))] == toks  # shared block
    for t in tables:
        t.free()
    assert a.num_free == 10 and all(r == 0 for r in a._ref)
