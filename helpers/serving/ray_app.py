"""The same router, scaled out with Ray Serve: N replicas behind Ray's HTTP proxy, on this machine.

Scale-out of the routing layer is a solved problem; we reuse an existing engine for it instead of writing a cluster
manager. Ray Serve runs each replica of a deployment in its own process (a Ray actor), puts an HTTP proxy in front of
them and balances requests over them (power of two choices on queue lengths); `serve.status()` reports the replicas.
Every replica holds its own `Router` (its own health checks and prefix-owner table: two replicas may send a new prefix
to different backends at first — a cost of stateless scale-out, measured in the notebook by the answers' x-backend).

    with deployed(backends, num_replicas=2) as (url, startup_s):
        httpx.post(url + "/v1/chat/completions", json=...)
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from typing import Iterator

from .router import Backend, Router, make_app


def router_deployment(num_replicas: int = 2, cpus_per_replica: float = 0.5):
    """A Ray Serve deployment class whose replicas each serve `make_app(Router(backends, policy))`."""
    from ray import serve

    @serve.deployment(num_replicas=num_replicas, ray_actor_options={"num_cpus": cpus_per_replica})
    @serve.ingress()  # the ASGI app is built on the replica, after __init__
    class RouterDeployment:
        def __init__(self, backends: list[dict], policy: str = "payload"):
            self.router = Router([Backend(**b) for b in backends], policy)

        def __serve_build_asgi_app__(self):
            app = make_app(self.router)

            @app.middleware("http")
            async def replica_header(request, call_next):  # which replica (process) answered
                response = await call_next(request)
                response.headers["x-replica"] = str(os.getpid())
                return response

            return app

    return RouterDeployment


@contextmanager
def deployed(backends: list[Backend], *, num_replicas: int = 2, port: int, policy: str = "payload",
             num_cpus: int = 2) -> Iterator[tuple[str, float]]:
    """Start Ray (local, `num_cpus` CPUs, no dashboard), deploy the router with `num_replicas` replicas on
    127.0.0.1:`port`; yield (url, start-up seconds). Serve and Ray are ALWAYS shut down on leaving the block."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report, no prompt
    import ray
    from ray import serve

    t0 = time.perf_counter()
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 _node_ip_address="127.0.0.1")
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        spec = [{k: v for k, v in asdict(b).items() if k in ("name", "url", "tier", "max_prompt_tokens",
                                                              "max_in_flight")} for b in backends]
        app = router_deployment(num_replicas).bind(spec, policy)
        serve.run(app, name="router", route_prefix="/", blocking=False)
        _wait_running("router", timeout=120)
        yield f"http://127.0.0.1:{port}", time.perf_counter() - t0
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def _wait_running(name: str, timeout: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout
    while True:
        status = serve.status().applications.get(name)
        if status is not None and str(status.status).endswith("RUNNING"):
            return
        if status is not None and str(status.status).endswith(("DEPLOY_FAILED", "UNHEALTHY")):
            raise RuntimeError(f"Ray Serve application {name!r}: {status.status} {status.message}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"Ray Serve application {name!r} not running after {timeout:.0f} s")
        time.sleep(0.2)


def replicas(name: str = "router") -> dict[str, int]:
    """serve.status()'s replica counts of the app's deployment, e.g. {"RUNNING": 2}."""
    from ray import serve

    app = serve.status().applications[name]
    return {str(k): int(v) for d in app.deployments.values() for k, v in d.replica_states.items()}
