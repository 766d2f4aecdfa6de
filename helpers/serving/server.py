"""An OpenAI-compatible HTTP server over our engine (FastAPI on uvicorn).

The engine is synchronous: `step()` advances every running sequence by one token. This file puts it behind the API
that clients already speak (the OpenAI one, which vLLM, llama-server and TGI all serve):

    POST /v1/completions       {"prompt": "...", "max_tokens": 16, "temperature": 0, "stream": true}
    POST /v1/chat/completions  {"messages": [{"role": "user", "content": "..."}], ...}   (the tokenizer's chat template)
    GET  /v1/models  /health  /metrics   (Prometheus text: running, waiting, KV blocks, requests served)

Threads. ONE engine thread owns the engine: it takes new requests and aborts from an inbox, calls step() while there
is work, and hands every new token to its request's asyncio.Queue through `loop.call_soon_threadsafe` (asyncio objects
are not thread-safe). The event loop only parses, validates and streams; it never waits for a step, so a long prompt
being prefilled does not stop the server from accepting (or refusing) other requests.

Streaming. With `"stream": true` the answer is a text/event-stream of server-sent events: one `data: {json}\\n\\n` chunk
per piece of new text, then `data: [DONE]\\n\\n`. Text is detokenized incrementally (a byte-level BPE token can end
in the middle of a UTF-8 character: such text is held back until the character is complete).

Bad requests get a 4xx and an OpenAI-style body {"error": {"message", "type", "param"}}; nothing else changes, the
server keeps serving. A client that disconnects has its request aborted, so its KV blocks are freed at once.

`python -m helpers.serving.server --port P [--model smollm2|gpt]` serves SmolLM2-135M-Instruct (our Llama on
our engine) or the course's tiny character GPT on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import queue
import threading
import time
import traceback
import uuid
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from .engine import SamplingParams

# ------------------------------------------------------------------------------------------------
# Request bodies: pydantic checks types and ranges (strict: "16" is not an int), FastAPI turns failures into 400s


class _Sampling(BaseModel):
    model: StrictStr | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] = 16
    temperature: Annotated[StrictFloat, Field(ge=0)] = 1.0  # OpenAI's default; 0 = greedy (strict floats take ints)
    top_p: Annotated[StrictFloat, Field(gt=0, le=1)] = 1.0
    seed: StrictInt | None = None
    n: Annotated[StrictInt, Field(ge=1, le=16)] = 1
    stream: StrictBool = False
    stream_options: dict | None = None  # {"include_usage": true}: a last chunk with the usage
    stop_token_ids: list[StrictInt] = []  # vLLM's extension: stop on these tokens too
    return_token_ids: StrictBool = False  # vLLM's extension: each choice carries the generated token ids


class CompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictInt]  # text, or token ids (OpenAI allows both)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: StrictStr


class ChatRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]


class APIError(Exception):
    """A refusal with an HTTP status and an OpenAI error type."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type, param


class BackendHeader:
    """ASGI middleware: every response says who answered (`x-backend`), which a router in front reads."""

    def __init__(self, app, name: str):
        self.app, self.header = app, (b"x-backend", name.encode())

    async def __call__(self, scope, receive, send):
        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header if scope["type"] == "http" else send)


def _error(status: int, message: str, type: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": status}}, status)


# ------------------------------------------------------------------------------------------------
# The engine thread


class EngineLoop:
    """Owns the engine: one thread adds requests, steps, and delivers tokens to each request's asyncio.Queue."""

    def __init__(self, engine):
        self.engine = engine
        self.inbox: queue.Queue = queue.Queue()  # ("add", ...) and ("abort", rid) from the event loop
        self.streams: dict[str, list] = {}  # request id -> [loop, asyncio.Queue, sequences not yet finished]
        self.counters = {"requests_total": 0, "requests_finished_total": 0, "requests_aborted_total": 0,
                         "prompt_tokens_total": 0, "generation_tokens_total": 0, "steps_total": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)

    async def submit(self, prompt_ids: list[int], params, request_id: str) -> asyncio.Queue:
        """Queue a request for the engine thread; returns the queue its StepOutputs arrive on.
        Raises what engine.add_request raises (ValueError for a prompt that does not fit, ...)."""
        loop = asyncio.get_running_loop()
        accepted, out = loop.create_future(), asyncio.Queue()
        self.inbox.put(("add", request_id, prompt_ids, params, loop, accepted, out))
        await accepted
        return out

    def abort(self, request_id: str):
        self.inbox.put(("abort", request_id))

    def _run(self):
        while not self._stop.is_set():
            busy = self.engine.has_unfinished()
            try:  # drain the inbox before each step; sleep on it (0.1 s, to see _stop) when there is no work
                self._handle(self.inbox.get_nowait() if busy else self.inbox.get(timeout=0.1))
                continue
            except queue.Empty:
                pass
            if busy:
                self._step()

    def _handle(self, item):
        if item[0] == "abort":
            if self.streams.pop(item[1], None) is not None:
                self.engine.abort(item[1])
                self.counters["requests_aborted_total"] += 1
            return
        _, rid, prompt_ids, params, loop, accepted, out = item
        try:
            self.engine.add_request(prompt_ids, params, request_id=rid)
        except Exception as e:  # a refusal: the handler turns it into a 4xx
            loop.call_soon_threadsafe(_settle, accepted, e)
            return
        self.streams[rid] = [loop, out, params.n]
        self.counters["requests_total"] += 1
        self.counters["prompt_tokens_total"] += len(prompt_ids)
        loop.call_soon_threadsafe(_settle, accepted, None)

    def _step(self):
        try:
            outputs = self.engine.step()
        except Exception as e:  # a bug in the engine: fail every open request (500) rather than hang them
            traceback.print_exc()
            for rid, (loop, out, _) in list(self.streams.items()):
                loop.call_soon_threadsafe(out.put_nowait, e)
                self.engine.abort(rid)
            self.streams.clear()
            return
        self.counters["steps_total"] += 1
        for o in outputs:
            stream = self.streams.get(o.request_id)
            if stream is None:  # aborted meanwhile
                continue
            self.counters["generation_tokens_total"] += 1
            stream[0].call_soon_threadsafe(stream[1].put_nowait, o)
            if o.finished:
                stream[2] -= 1
                if stream[2] == 0:
                    del self.streams[o.request_id]
                    self.counters["requests_finished_total"] += 1


def _settle(fut: asyncio.Future, exc: Exception | None):
    if not fut.done():  # the handler may have been cancelled (client gone)
        fut.set_exception(exc) if exc is not None else fut.set_result(None)


# ------------------------------------------------------------------------------------------------
# Text out


class Detokenizer:
    """Incremental detokenization of one sequence: add(token) -> the new text (held back while incomplete)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.text = tokenizer, [], ""

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for the next token
            return ""
        delta, self.text = text[len(self.text):], text
        return delta


def sse(obj) -> str:
    """One server-sent event carrying a JSON object: the line `data: {...}` and a blank line."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


# ------------------------------------------------------------------------------------------------
# The app


def make_app(engine, tokenizer, model_name: str, *, eos_token_id: int | None = None,
             stop_token_ids: tuple[int, ...] = ()) -> FastAPI:
    """The FastAPI app serving `engine` as `model_name`.

    tokenizer: .encode(text) -> ids, .decode(ids) -> text, and for chat .apply_chat_template(messages,
    add_generation_prompt=True, tokenize=True). eos_token_id / stop_token_ids: tokens that end a sequence (the engine's
    eos and the server's defaults); they are counted in usage but not shown as text."""
    core = EngineLoop(engine)

    @asynccontextmanager
    async def lifespan(app):
        core.start()
        yield
        core.stop()

    app = FastAPI(title=f"course engine: {model_name}", lifespan=lifespan)
    app.state.core = core
    app.add_middleware(BackendHeader, name=model_name)
    try:
        vocab_size = len(tokenizer)  # Hugging Face tokenizers: base vocabulary + added tokens
    except TypeError:
        vocab_size = tokenizer.vocab_size

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request, exc):
        errs = exc.errors()
        if any(e["type"] == "json_invalid" for e in errs):
            return _error(400, f"malformed JSON body: {errs[0].get('ctx', {}).get('error', errs[0]['msg'])}",
                          "invalid_request_error")
        msgs = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errs]
        param = ".".join(str(p) for p in errs[0]["loc"][1:]) or None
        return _error(400, "; ".join(msgs), "invalid_request_error", param)

    @app.exception_handler(APIError)
    async def on_api_error(request, exc: APIError):
        return _error(exc.status, exc.message, exc.type, exc.param)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "course",
                                            "max_model_len": engine.max_context}]}

    @app.get("/metrics")
    async def metrics():
        values = {**{k: v for k, v in engine.stats().items() if isinstance(v, (int, float))}, **core.counters}
        lines = [f"engine_{k} {v}" for k, v in values.items()]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    def check_model(body: _Sampling):
        if body.model is not None and body.model != model_name:
            raise APIError(404, f"model {body.model!r} does not exist: this server serves {model_name!r}",
                           "model_not_found", "model")

    def encode(text: str) -> list[int]:
        try:
            return tokenizer.encode(text)
        except (KeyError, ValueError) as e:  # e.g. a character the tiny GPT's vocabulary does not have
            raise APIError(400, f"{model_name}'s tokenizer cannot encode the prompt ({e!r})", param="prompt") from None

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_model(body)
        ids = encode(body.prompt) if isinstance(body.prompt, str) else list(body.prompt)
        return await generate(request, body, ids, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        check_model(body)
        if not hasattr(tokenizer, "apply_chat_template"):
            raise APIError(400, f"{model_name} has no chat template: use /v1/completions", param="messages")
        ids = tokenizer.apply_chat_template([m.model_dump() for m in body.messages], add_generation_prompt=True,
                                            tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        return await generate(request, body, list(ids), chat=True)

    async def generate(request: Request, body: _Sampling, prompt_ids: list[int], chat: bool):
        if not prompt_ids:
            raise APIError(400, "the prompt is empty", param="prompt")
        if not all(0 <= t < vocab_size for t in prompt_ids):
            raise APIError(400, f"prompt token ids must lie in [0, {vocab_size})", param="prompt")
        if len(prompt_ids) + body.max_tokens > engine.max_context:
            raise APIError(400, f"the prompt ({len(prompt_ids)} tokens) plus max_tokens ({body.max_tokens}) is longer "
                                f"than the model's context ({engine.max_context} tokens)", "context_length_exceeded",
                           "prompt" if len(prompt_ids) >= engine.max_context else "max_tokens")
        stops = tuple(dict.fromkeys([*stop_token_ids, *body.stop_token_ids]))
        try:
            params = SamplingParams(max_tokens=body.max_tokens, temperature=float(body.temperature),
                                    top_p=float(body.top_p), seed=body.seed, stop_token_ids=stops, n=body.n)
        except ValueError as e:
            raise APIError(400, str(e)) from None
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        try:
            out = await core.submit(prompt_ids, params, rid)
        except ValueError as e:  # the engine's own refusal (e.g. the prompt does not fit)
            raise APIError(400, str(e), param="prompt") from None
        except asyncio.CancelledError:
            core.abort(rid)
            raise
        stop_set = set(stops) | ({eos_token_id} if eos_token_id is not None else set())
        head = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": model_name}
        detok = [Detokenizer(tokenizer) for _ in range(body.n)]
        reasons: list[str | None] = [None] * body.n

        def take(o) -> str:  # one StepOutput -> its new text
            if o.finished:
                reasons[o.index] = o.finish_reason
                if o.finish_reason == "stop" and o.token_id in stop_set:
                    detok[o.index].ids.append(o.token_id)  # counted, not shown
                    return ""
            return detok[o.index].add(o.token_id)

        def usage():
            done = sum(len(d.ids) for d in detok)
            return {"prompt_tokens": len(prompt_ids), "completion_tokens": done,
                    "total_tokens": len(prompt_ids) + done}

        async def next_output():
            o = await out.get()
            if isinstance(o, Exception):
                raise APIError(500, f"engine failure: {o!r}", "internal_error")
            return o

        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))

            def chunk(index, text, reason):
                choice = ({"index": index, "delta": {"role": "assistant", "content": text} if text else {},
                           "finish_reason": reason} if chat else
                          {"index": index, "text": text, "logprobs": None, "finish_reason": reason})
                return sse({**head, "object": "chat.completion.chunk" if chat else "text_completion",
                            "choices": [choice]})

            async def events():
                finished = False
                try:
                    while not finished:
                        o = await next_output()
                        text = take(o)
                        if text or o.finished:
                            yield chunk(o.index, text, o.finish_reason if o.finished else None)
                        finished = all(r is not None for r in reasons)
                    if include_usage:
                        yield sse({**head, "object": "chat.completion.chunk" if chat else "text_completion",
                                   "choices": [], "usage": usage()})
                    yield SSE_DONE
                except APIError as e:
                    yield sse({"error": {"message": e.message, "type": e.type}})
                finally:
                    if not finished:  # the client went away (or the engine failed): free its blocks now
                        core.abort(rid)

            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache"})

        try:
            while not all(r is not None for r in reasons):
                try:
                    take(await asyncio.wait_for(next_output(), timeout=1.0))
                except TimeoutError:
                    if await request.is_disconnected():
                        core.abort(rid)
                        return JSONResponse({}, 499)
        except asyncio.CancelledError:
            core.abort(rid)
            raise
        choices = []
        for i, d in enumerate(detok):
            text = tokenizer.decode([t for t in d.ids if not (reasons[i] == "stop" and t in stop_set)])
            c = ({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reasons[i]} if chat
                 else {"index": i, "text": text, "logprobs": None, "finish_reason": reasons[i]})
            if body.return_token_ids:
                c["token_ids"] = list(d.ids)
            choices.append(c)
        result = {**head, "choices": choices, "usage": usage()}
        if body.return_token_ids:
            result["prompt_token_ids"] = prompt_ids
        return result

    return app


# ------------------------------------------------------------------------------------------------
# `python -m helpers.serving.server`

MODEL_NAMES = {"smollm2": "smollm2-135m-instruct", "gpt": "tiny-gpt-shakespeare-char"}


def load_model(name: str):
    """(model with the engine's protocol, tokenizer, eos id, default stop ids) for --model smollm2 | gpt."""
    if name == "smollm2":
        from .. import llm
        from ..models.llama import Llama

        hf, tok = llm.load()
        eos = hf.generation_config.eos_token_id  # <|im_end|> = 2 (tok.eos_token_id is <|im_start|> in this copy)
        return Llama.from_hf(hf).eval(), tok, eos, (tok.convert_tokens_to_ids("<|endoftext|>"),)
    if name == "gpt":
        from ..models.gpt import GPTForServing
        from ..models.tiny_gpt import load_tiny_gpt

        tiny = load_tiny_gpt(progress=False)
        return GPTForServing(tiny.model).eval(), tiny.tokenizer, None, ()
    raise ValueError(f"unknown model {name!r}: smollm2 or gpt")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", choices=sorted(MODEL_NAMES), default="smollm2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-blocks", type=int, default=512)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--max-num-seqs", type=int, default=16)
    p.add_argument("--max-num-batched-tokens", type=int, default=512)
    p.add_argument("--policy", choices=["continuous", "static"], default="continuous")
    args = p.parse_args(argv)

    import torch
    import uvicorn

    from .engine import Engine

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tok, eos, stops = load_model(args.model)
    engine = Engine(model, num_blocks=args.num_blocks, block_size=args.block_size, max_num_seqs=args.max_num_seqs,
                    max_num_batched_tokens=args.max_num_batched_tokens, policy=args.policy, eos_token_id=eos)
    app = make_app(engine, tok, MODEL_NAMES[args.model], eos_token_id=eos, stop_token_ids=stops)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
