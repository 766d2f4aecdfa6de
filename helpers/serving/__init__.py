"""LLM serving from scratch (Modules 2.1, 2.2): one idea a file, read top-down.

kv_cache.py         the contiguous ("traditional") KV cache, the greedy reference generator, memory-waste arithmetic
paged_attention.py  KV storage in fixed-size blocks and attention through a block table (PagedAttention)
block_allocator.py  hands out block ids: free list, reference counts, copy-on-write
scheduler.py        which sequences run this step: continuous (iteration-level) and static batching
engine.py           the engine loop: scheduler + allocator + model runner, one token per running sequence a step
server.py           an OpenAI-compatible HTTP server (FastAPI) over the engine
router.py           an HTTP router in front of several backends: policies, health checks, failover
loadgen.py          a bounded asynchronous load generator and its latency / throughput summary
processes.py        start and stop servers safely (process groups, health waits, always terminated)
ray_app.py          the same router scaled out with Ray Serve replicas
triton_repo.py      a Triton Inference Server model repository: build it, simulate its batcher, query it
"""
