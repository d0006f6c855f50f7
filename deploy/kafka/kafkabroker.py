#!/usr/bin/env python3
"""A throwaway single-node Apache Kafka (KRaft) broker for tests and local development.

Why it exists: CI has no Docker and no Kafka install, only Java and Maven, so the broker
runs straight from the Maven Central jars listed in pom.xml next to this file. Stdlib only,
so it works before any virtualenv exists.

    python deploy/kafka/kafkabroker.py fetch             # download the jars once (cached)
    python deploy/kafka/kafkabroker.py start [--detach]  # prints the bootstrap address
    python deploy/kafka/kafkabroker.py stop              # stops the broker of the pid file

From Python, `start_broker()` starts one broker and `start_cluster(n=3)` a KRaft quorum of
n combined broker+controller nodes (replicated topics, broker failover tests).

The jar cache lives outside the source tree, in ${VIGO_CACHE_DIR:-~/.cache/vigo}.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from types import FrameType
from typing import Any

KAFKA_VERSION = "4.1.1"
HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
JAVA_HINT = "Java 17 (apt-get install openjdk-17-jre-headless)"
MAVEN_HINT = "Maven (apt-get install maven)"
# Small heap, serial GC, C1 only: the CI box has 2 cores and runs the tests next to it.
JVM_FLAGS = [
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
HOST = "127.0.0.1"

LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class BrokerError(RuntimeError):
    """The broker could not be formatted or started; the message carries the log tail."""


# --------------------------------------------------------------------------- jars


def cache_dir() -> Path:
    """Root of the download cache; VIGO_CACHE_DIR lets CI point it at a cached volume."""
    env = os.environ.get("VIGO_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vigo"


def _require(cmd: str, hint: str) -> str:
    path = shutil.which(cmd)
    if path is None:
        raise SystemExit(f"kafkabroker: `{cmd}` not found on PATH; install {hint}")
    return path


@cache
def _java() -> str:
    """Path of a Java >= 17 (Kafka 4 brokers refuse older ones)."""
    java = _require("java", JAVA_HINT)
    out = subprocess.run(
        [java, "-version"], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if m:
        major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2) or 0)
        if major < 17:
            raise SystemExit(
                f"kafkabroker: found Java {major}, Kafka needs 17+; install {JAVA_HINT}"
            )
    return java


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise fetches between concurrent processes (parallel CI jobs, xdist workers)."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_jars() -> Path:
    """Return the directory holding the broker's jars, downloading them with Maven once.

    A marker holding pom.xml's sha256 is written after a complete download, so later runs
    never call mvn, and editing pom.xml triggers a fresh download.
    """
    _java()
    home = cache_dir() / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    marker = home / ".fetched"
    want = hashlib.sha256(POM.read_bytes()).hexdigest()

    def fresh() -> bool:
        return marker.is_file() and marker.read_text().strip() == want and libs.is_dir()

    if fresh():
        return libs
    mvn = _require("mvn", MAVEN_HINT)
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        if fresh():
            return libs
        tmp = home / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
        print(f"kafkabroker: fetching Kafka {KAFKA_VERSION} jars into {libs}", file=sys.stderr)
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
            raise SystemExit(f"kafkabroker: mvn failed (exit {proc.returncode}):\n{tail}")
        marker.unlink(missing_ok=True)
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        marker.write_text(want + "\n")
    return libs


# --------------------------------------------------------------------------- broker


def ephemeral_port_floor() -> int:
    """The first port of the kernel's ephemeral range, where every outgoing connection
    takes its local port: a port found free there can be taken before it is bound."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _broker_port_range() -> range:
    """Where brokers' ports are picked: under the ephemeral range (so that a JVM binding
    after the pick, or a broker restarting on its port, does not lose it to an outgoing
    connection), and apart from the test harness's worker ports (the 6,000 just under
    it)."""
    low = ephemeral_port_floor()
    return range(max(1024, low - 12000), max(1024, low - 6000))


def _free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 (held together so they cannot collide), picked
    at random in `_broker_port_range`; from the kernel's if that range is crowded."""
    socks: list[socket.socket] = []
    try:
        ports = _broker_port_range()
        for port in random.sample(ports, min(len(ports), 400)):
            if len(socks) == n:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((HOST, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        while len(socks) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _cluster_id() -> str:
    """A Kafka cluster id (url-safe base64 UUID), made here to save a JVM start."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # One starting with "-" would be read by the storage tool as an option (1 in 64).
        if not cluster_id.startswith("-"):
            return cluster_id


class SaslSsl:
    """A SASL_SSL listener with SCRAM-SHA-512 next to the plaintext one (issue 13: the
    worker against a broker that requires authentication over TLS).

    The certificate is made with openssl at start (a CA and a broker certificate for
    127.0.0.1, PEM, in the data dir); the users are created by Kafka's own storage tool
    (`format --add-scram`), from the same jars. The plaintext listener stays for the
    controller, for `probe` and for test tools that only read or write topics."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = dict(users)
        self.port = 0
        self.ca_file: Path | None = None

    def make_certificates(self, data: Path) -> Path:
        """CA + broker key and certificate; returns the broker's PEM keystore."""
        openssl = _require("openssl", "openssl (apt-get install openssl)")
        tls = data / "tls"
        tls.mkdir(exist_ok=True)

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], cwd=tls, check=True, capture_output=True)

        run(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=vigo-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        )
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={HOST}",
            "-keyout",
            "broker.key",
            "-out",
            "broker.csr",
        )
        (tls / "san.ext").write_text(f"subjectAltName=IP:{HOST}\n")
        run(
            "x509",
            "-req",
            "-in",
            "broker.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "broker.pem",
        )
        # Kafka's PEM keystore wants a PKCS#8 key, then the certificate chain.
        run("pkcs8", "-topk8", "-nocrypt", "-in", "broker.key", "-out", "broker.p8")
        keystore = tls / "keystore.pem"
        keystore.write_text(
            (tls / "broker.p8").read_text()
            + (tls / "broker.pem").read_text()
            + (tls / "ca.pem").read_text()
        )
        self.ca_file = tls / "ca.pem"
        return keystore

    def properties(self, keystore: Path) -> dict[str, str]:
        return {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
        }

    def format_args(self) -> list[str]:
        args = []
        for name, password in self.users.items():
            args += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        return args


def _server_properties(
    port: int,
    controller_port: int,
    log_dir: Path,
    secure: SaslSsl | None = None,
    keystore: Path | None = None,
    extra: dict[str, str] | None = None,
    *,
    node_id: int = 1,
    voters: str | None = None,
) -> str:
    """One node's server.properties. Alone (`voters` None) it is its own quorum, found
    through `controller.quorum.bootstrap.servers`; in a cluster `voters` is the static
    quorum (`1@host:port,2@host:port,...`), the same on every node."""
    listeners = f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}"
    advertised = f"PLAINTEXT://{HOST}:{port}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if secure is not None:
        listeners += f",SASL_SSL://{HOST}:{secure.port}"
        advertised += f",SASL_SSL://{HOST}:{secure.port}"
        protocols += ",SASL_SSL:SASL_SSL"
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "listeners": listeners,
        "advertised.listeners": advertised,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": protocols,
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Test-sized: fewer internal partitions and threads, a 16 MiB (not 128 MiB)
        # compaction buffer so the cleaner fits the 512 MiB heap.
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.num.partitions": "8",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "auto.leader.rebalance.enable": "false",
    }
    if voters is None:
        props["controller.quorum.bootstrap.servers"] = f"{HOST}:{controller_port}"
    else:
        props["controller.quorum.voters"] = voters
    if secure is not None and keystore is not None:
        props.update(secure.properties(keystore))
    props.update(extra or {})
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def live_brokers(host: str, port: int, timeout: float = 2.0) -> list[int] | None:
    """The node ids of the live (registered, unfenced) brokers that the broker at
    host:port knows of, from a Metadata v1 request; None when it does not answer."""
    client_id = b"kafkabroker"
    # request header v1: api_key=3 (Metadata), api_version=1, correlation_id, client_id;
    # body: topics = null (all topics).
    msg = struct.pack(">hhih", 3, 1, 7, len(client_id)) + client_id + struct.pack(">i", -1)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(msg)) + msg)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            data = _recv_exact(sock, size)
        correlation_id, n_brokers = struct.unpack_from(">ii", data, 0)
        if correlation_id != 7:
            return None
        # brokers: [node_id int32, host string, port int32, rack nullable string]
        ids, at = [], 8
        for _ in range(n_brokers):
            (node_id,) = struct.unpack_from(">i", data, at)
            (host_len,) = struct.unpack_from(">h", data, at + 4)
            at += 6 + host_len + 4
            (rack_len,) = struct.unpack_from(">h", data, at)
            at += 2 + max(rack_len, 0)
            ids.append(node_id)
    except (OSError, struct.error):
        return None
    return ids


def probe(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a Metadata v1 request is answered with at least one live broker.

    A TCP connect alone is not enough: KRaft opens the listener before the broker has
    registered, and clients then see an empty cluster.
    """
    return bool(live_brokers(host, port, timeout))


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _is_kafka(pid: int, marker: str = "kafka.Kafka") -> bool:
    """Guard against a recycled pid: only ever signal a kafka.Kafka JVM."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"kafka.Kafka" in cmdline and marker.encode() in cmdline


def _sweep_stale_data_dirs() -> None:
    """Remove temp data dirs of brokers whose owner was SIGKILLed (no finally ran)."""
    for d in Path(tempfile.gettempdir()).glob("vigo-kafka-*"):
        # A single broker's dir holds broker.pid, a cluster's one per node-N/ dir.
        pids = []
        for pid_file in [d / "broker.pid", *d.glob("node-*/broker.pid")]:
            with contextlib.suppress(OSError, ValueError):
                pids.append((int(pid_file.read_text()), str(pid_file.parent)))
        if not pids:
            continue  # being set up right now, or not ours
        if not any(_is_kafka(pid, marker) for pid, marker in pids):
            shutil.rmtree(d, ignore_errors=True)


def _die_with_parent() -> Callable[[], None] | None:
    """preexec_fn making Linux SIGTERM the broker when the starting thread dies.

    Why: a pytest run killed with SIGKILL (or a timeout's os._exit) never runs its
    finally blocks; without this the JVM would outlive it and hold the ports.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)

    return hook


def _terminate_group(pid: int, alive: Callable[[], bool], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group (graceful broker shutdown), SIGKILL after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive():
                return
            time.sleep(0.1)


def _jvm(data: Path) -> list[str]:
    """The java command line up to the main class, logging as log4j2.properties says."""
    log4j = data / "log4j2.properties"
    if not log4j.is_file():
        log4j.write_text(LOG4J2_PROPERTIES)
    libs = ensure_jars()
    return [_java(), *JVM_FLAGS, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]


def _format_command(data: Path, cluster_id: str, *args: str) -> list[str]:
    props = data / "server.properties"
    return [
        *_jvm(data),
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        cluster_id,
        "--config",
        str(props),
        *args,
    ]


def _launch(data: Path, *, die_with_parent: bool) -> subprocess.Popen[bytes]:
    """Start the broker of `data`/server.properties, logging to `data`/server.log, in a
    session of its own; its pid goes to `data`/broker.pid (for _sweep_stale_data_dirs)."""
    with open(data / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [*_jvm(data), "kafka.Kafka", str(data / "server.properties")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data,
            start_new_session=True,
            preexec_fn=_die_with_parent() if die_with_parent else None,
        )
    (data / "broker.pid").write_text(f"{proc.pid}\n")
    return proc


class Broker:
    """A running broker; `stop()` is idempotent and also runs at interpreter exit."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        port: int,
        controller_port: int,
        data_dir: Path,
        owns_data_dir: bool,
        node_id: int = 1,
    ) -> None:
        self._proc = proc
        self.port = port
        self.controller_port = controller_port
        self.data_dir = data_dir
        self.owns_data_dir = owns_data_dir
        self.node_id = node_id
        self.log_path = data_dir / "server.log"
        #: The SASL_SSL listener, if the broker was started with one.
        self.secure: SaslSsl | None = None
        _LIVE.append(self)

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self._proc.pid

    def running(self) -> bool:
        return self._proc.poll() is None

    def wait(self) -> int:
        return self._proc.wait()

    def detach(self) -> None:
        """Leave the broker running after this interpreter exits (CLI --detach)."""
        with contextlib.suppress(ValueError):
            _LIVE.remove(self)

    def stop(self) -> None:
        if self.running():
            _terminate_group(self.pid, self.running)
        self._proc.wait()
        self.detach()
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the broker (no controlled shutdown, no flush): a crashed node. Its data
        dir stays; `restart()` brings it back on it."""
        if self.running():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self._proc.wait()

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        """Stop the broker (if it runs) and start it again on the same ports and data: what
        a broker restart looks like to the clients (failure tests). Returns once the broker
        is registered again (its own node id among the live brokers it reports)."""
        if self.running():
            _terminate_group(self.pid, self.running)
        self._proc.wait()
        self._proc = _launch(self.data_dir, die_with_parent=True)
        deadline = time.monotonic() + timeout
        while self.node_id not in (live_brokers(HOST, self.port) or []):
            if not self.running() or time.monotonic() > deadline:
                raise BrokerError(f"kafka broker did not restart:\n{_log_tail(self.log_path)}")
            time.sleep(0.2)

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Broker(bootstrap={self.bootstrap!r}, pid={self.pid}, data_dir={self.data_dir})"


_LIVE: list[Broker] = []


@atexit.register
def _stop_all() -> None:
    for broker in list(_LIVE):
        broker.stop()


def start_broker(
    port: int | None = None,
    data_dir: Path | None = None,
    *,
    timeout: float = START_TIMEOUT_S,
    die_with_parent: bool = True,
    secure: SaslSsl | None = None,
    extra: dict[str, str] | None = None,
) -> Broker:
    """Format fresh KRaft storage and start a combined broker+controller on 127.0.0.1.

    Picks free ports when `port` is None. A `data_dir` given by the caller is kept (its
    kafka-logs/ is wiped first); a temporary one is created otherwise and removed by
    stop(). `extra` adds or overrides server properties (an authorizer, for one).
    Returns once the broker answers metadata requests.
    """
    ensure_jars()
    owns = data_dir is None
    if owns:
        _sweep_stale_data_dirs()
    data = Path(tempfile.mkdtemp(prefix="vigo-kafka-")) if data_dir is None else data_dir
    data = data.resolve()
    try:
        data.mkdir(parents=True, exist_ok=True)
        free = [p for p in _free_ports(3) if p != port]
        broker_port = port if port is not None else free.pop(0)
        controller_port = free[0]
        log_dir = data / "kafka-logs"
        shutil.rmtree(log_dir, ignore_errors=True)
        keystore = None
        if secure is not None:
            secure.port = free[1]
            keystore = secure.make_certificates(data)
        (data / "server.properties").write_text(
            _server_properties(broker_port, controller_port, log_dir, secure, keystore, extra)
        )
        (data / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        fmt = subprocess.run(
            _format_command(
                data,
                _cluster_id(),
                "--standalone",
                *(secure.format_args() if secure is not None else []),
            ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if fmt.returncode != 0:
            raise BrokerError(f"kafka storage format failed:\n{fmt.stdout}{fmt.stderr}")
        proc = _launch(data, die_with_parent=die_with_parent)
    except BaseException:
        if owns:
            shutil.rmtree(data, ignore_errors=True)
        raise
    broker = Broker(proc, broker_port, controller_port, data, owns)
    broker.secure = secure
    try:
        _wait_registered([broker], timeout)
    except BaseException:
        broker.stop()
        raise
    return broker


def _wait_registered(brokers: list[Broker], timeout: float) -> None:
    """Until every broker reports all of `brokers` as live (registered and unfenced)."""
    want = {b.node_id for b in brokers}
    deadline = time.monotonic() + timeout
    pending = list(brokers)
    while pending:
        broker = pending[0]
        if want <= set(live_brokers(HOST, broker.port) or []):
            pending.pop(0)
            continue
        if not broker.running():
            raise BrokerError(
                f"kafka broker {broker.node_id} exited with {broker.wait()} while starting; "
                f"log {broker.log_path}:\n{_log_tail(broker.log_path)}"
            )
        if time.monotonic() > deadline:
            raise BrokerError(
                f"kafka broker {broker.node_id} not ready after {timeout:.0f}s on "
                f"{broker.bootstrap}; log {broker.log_path}:\n{_log_tail(broker.log_path)}"
            )
        time.sleep(0.2)


# --------------------------------------------------------------------------- cluster


def cluster_defaults(n: int) -> dict[str, str]:
    """Broker settings of an n-node cluster: topics replicated on up to 3 nodes, a write
    acknowledged by 2 of them (with acks=all), the internal topics likewise."""
    replicas = min(3, n)
    min_isr = min(2, replicas)
    return {
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_isr),
    }


class Cluster:
    """n running brokers, each also a controller of one KRaft quorum (static voters).

    `brokers[i]` is node i+1, a `Broker` with its own ports and data dir (`node-{i+1}/`)
    that can be killed and restarted on its data. `stop()` is idempotent and also runs at
    interpreter exit."""

    def __init__(
        self, brokers: list[Broker], data_dir: Path, owns_data_dir: bool, cluster_id: str
    ) -> None:
        self.brokers = brokers
        self.data_dir = data_dir
        self.owns_data_dir = owns_data_dir
        self.cluster_id = cluster_id
        _LIVE_CLUSTERS.append(self)

    @property
    def bootstrap(self) -> str:
        """Every node's address, comma-separated (a client survives any one's loss)."""
        return ",".join(b.bootstrap for b in self.brokers)

    def broker(self, node_id: int) -> Broker:
        return next(b for b in self.brokers if b.node_id == node_id)

    def by_port(self, port: int) -> Broker:
        return next(b for b in self.brokers if b.port == port)

    def stop(self) -> None:
        """SIGTERM every node at once (one by one, the last ones would wait for a quorum
        that is gone), SIGKILL what is left after STOP_TIMEOUT_S, remove an owned dir."""
        for broker in self.brokers:
            if broker.running():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(broker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(b.running() for b in self.brokers) and time.monotonic() < deadline:
            time.sleep(0.1)
        for broker in self.brokers:
            broker.kill()
            broker.stop()
        with contextlib.suppress(ValueError):
            _LIVE_CLUSTERS.remove(self)
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Cluster(bootstrap={self.bootstrap!r}, data_dir={self.data_dir})"


_LIVE_CLUSTERS: list[Cluster] = []


@atexit.register
def _stop_all_clusters() -> None:
    for cluster in list(_LIVE_CLUSTERS):
        cluster.stop()


def start_cluster(
    n: int = 3,
    data_dir: Path | None = None,
    *,
    timeout: float = 2 * START_TIMEOUT_S,
    die_with_parent: bool = True,
    extra: dict[str, str] | None = None,
) -> Cluster:
    """Start n combined broker+controller nodes on 127.0.0.1 forming one KRaft quorum:
    the same `controller.quorum.voters` and cluster id on each, formatted on each, every
    node with its own ports and data dir `data_dir`/node-{id}/ (wiped first; a temporary
    root is created when `data_dir` is None and removed by stop()). The brokers run with
    `cluster_defaults(n)`, then `extra`. Returns once every node reports all n brokers
    live. Each JVM has the single broker's small heap (JVM_FLAGS)."""
    if n < 1:
        raise ValueError("a cluster needs at least one node")
    ensure_jars()
    owns = data_dir is None
    if owns:
        _sweep_stale_data_dirs()
    root = Path(tempfile.mkdtemp(prefix="vigo-kafka-cluster-")) if data_dir is None else data_dir
    root = root.resolve()
    cluster_id = _cluster_id()
    brokers: list[Broker] = []
    try:
        root.mkdir(parents=True, exist_ok=True)
        ports = _free_ports(2 * n)
        nodes = [(i + 1, ports[2 * i], ports[2 * i + 1], root / f"node-{i + 1}") for i in range(n)]
        voters = ",".join(f"{node}@{HOST}:{cport}" for node, _, cport, _ in nodes)
        props = {**cluster_defaults(n), **(extra or {})}
        for node, port, cport, data in nodes:
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(parents=True)
            (data / "server.properties").write_text(
                _server_properties(
                    port, cport, data / "kafka-logs", None, None, props, node_id=node, voters=voters
                )
            )
            (data / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        # Formatting is a JVM start per node: all at once.
        formats = [
            subprocess.Popen(
                _format_command(data, cluster_id),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _, _, _, data in nodes
        ]
        for fmt in formats:
            out, _ = fmt.communicate(timeout=120)
            if fmt.returncode != 0:
                raise BrokerError(f"kafka storage format failed:\n{out.decode(errors='replace')}")
        for node, port, cport, data in nodes:
            proc = _launch(data, die_with_parent=die_with_parent)
            brokers.append(Broker(proc, port, cport, data, False, node_id=node))
        cluster = Cluster(brokers, root, owns, cluster_id)
    except BaseException:
        for broker in brokers:
            broker.kill()
            broker.stop()
        if owns:
            shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        _wait_registered(brokers, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


# --------------------------------------------------------------------------- CLI


def _default_pid_file() -> Path:
    return cache_dir() / "kafka-broker.pid"


def _read_pid_file(path: Path) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info


def _cmd_start(args: argparse.Namespace) -> int:
    pid_file: Path = args.pid_file
    old = _read_pid_file(pid_file)
    if old and _is_kafka(int(old["pid"])):
        print(
            f"kafkabroker: already running (pid {old['pid']}, {old['bootstrap']}); stop it first",
            file=sys.stderr,
        )
        return 1
    try:
        broker = start_broker(
            args.port, args.data_dir, timeout=args.timeout, die_with_parent=not args.detach
        )
    except BrokerError as exc:
        print(f"kafkabroker: {exc}", file=sys.stderr)
        return 1
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(
        json.dumps(
            {
                "pid": broker.pid,
                "bootstrap": broker.bootstrap,
                "data_dir": str(broker.data_dir),
                "owns_data_dir": broker.owns_data_dir,
            }
        )
        + "\n"
    )
    print(broker.bootstrap, flush=True)
    print(f"kafkabroker: pid {broker.pid}, log {broker.log_path}", file=sys.stderr)
    if args.detach:
        broker.detach()
        return 0

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        rc = broker.wait()
        print(f"kafkabroker: broker exited with {rc}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
        pid_file.unlink(missing_ok=True)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    pid_file: Path = args.pid_file
    info = _read_pid_file(pid_file)
    if info is None:
        print(f"kafkabroker: no pid file at {pid_file}; nothing to stop", file=sys.stderr)
        return 0
    pid = int(info["pid"])
    if _is_kafka(pid):
        _terminate_group(pid, lambda: _is_kafka(pid))
        print(f"kafkabroker: stopped pid {pid}", file=sys.stderr)
    if info.get("owns_data_dir"):
        shutil.rmtree(info["data_dir"], ignore_errors=True)
    pid_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the broker jars (once; cached)")
    start = sub.add_parser("start", help="start a broker, print its bootstrap address")
    start.add_argument("--port", type=int, default=None)
    start.add_argument("--data-dir", type=Path, default=None)
    start.add_argument("--timeout", type=float, default=START_TIMEOUT_S)
    start.add_argument("--detach", action="store_true", help="return and leave it running")
    stop = sub.add_parser("stop", help="stop the broker named by the pid file")
    for p in (start, stop):
        p.add_argument("--pid-file", type=Path, default=_default_pid_file())
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(ensure_jars())
        return 0
    if args.command == "start":
        return _cmd_start(args)
    return _cmd_stop(args)


if __name__ == "__main__":
    sys.exit(main())
