"""Trains the zstd dictionary of the envoy records' tails (format 4,
`processor/records_envoy.py`) and writes it to `processor/data/envoy-tail-1.zdict`.

Run once, when a new dictionary (and with it a new record format) is wanted:
    .venv/bin/python scripts/envoy_dictionary.py [--out PATH]
The committed file is part of the record format: changelogs and RocksDB stores hold
tails compressed with it, so it is never retrained in place (its SHA-256 is checked when
`processor.records_envoy` is imported); a new dictionary is a new format number, and a
new file beside this one (`--out`).

What it learns from: envoy states built by the real rules (`apply_event`) from runs of a
synthetic fleet drawn here, wide on purpose and unlike every generator the benchmarks and
the simulator use (`benchmarks/benchcommon.py`, `benchmarks/bench_memory.py`,
`processor/cli/simulate.py`), so that the sizes they report are not sizes of the data
the dictionary was trained on: resources of many kinds (Puppet, Chef, Ansible and Salt
styles), run ids as UUIDs, bare hex, ULIDs and counters, several timestamp spellings,
config versions as git hashes, semantic versions and dates, assorted labels. What it
captures is what every fleet's records share: the msgpack layout, the run outcomes, the
ISO timestamp shape, hexadecimal digits, the usual resource kinds.
"""

from __future__ import annotations

import argparse
import random
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import zstandard  # noqa: E402

from processor.records_envoy import StoredEnvoy, encode_tail  # noqa: E402
from processor.records_tail import DICTIONARY_BYTES, DICTIONARY_PATH  # noqa: E402
from projections.envoy import EnvoyState, Rules, apply_event  # noqa: E402
from topics.events import Enrollment, ModuleError, Resource, Run  # noqa: E402
from topics.timestamps import iso_from_ms  # noqa: E402

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SAMPLES = 6_000
SEED = 20261207

KINDS = {
    "puppet": (
        "File[/etc/{w}/{w}.conf]",
        "Package[{w}]",
        "Service[{w}d]",
        "User[{w}]",
        "Exec[{w}-{n}]",
        "Cron[{w}]",
        "Mount[/srv/{w}]",
        "Sysctl[net.ipv4.{w}]",
    ),
    "chef": (
        "template[/etc/{w}/{w}.yml]", "package[{w}]", "service[{w}]", "directory[/var/lib/{w}]"
    ),
    "ansible": ("ansible.builtin.copy:{w}", "apt:{w}", "systemd:{w}.service", "lineinfile:{w}"),
    "salt": ("pkg.installed:{w}", "file.managed:/opt/{w}/{n}.ini", "service.running:{w}"),
    "vigo": ("file[/etc/{w}]", "package[{w}]", "service[{w}]", "group[{w}]", "yumrepo[{w}]"),
}  # fmt: skip
WORDS = (
    "nginx", "haproxy", "postgres", "redis", "kafka", "zookeeper", "ntp", "chrony",
    "sshd", "sudoers", "resolv", "hosts", "motd", "limits", "journald", "rsyslog",
    "docker", "containerd", "kubelet", "node_exporter", "telegraf", "vault", "consul",
    "openssl", "curl", "git", "python3", "java", "app", "billing", "auth", "search",
)  # fmt: skip
MODULES = ("base", "web", "db", "monitoring", "security", "users", "network", "storage")
LABEL_KEYS = ("env", "role", "zone", "dc", "team", "os", "tier", "cluster")
LABEL_VALUES = ("prod", "staging", "dev", "eu-west-1a", "us-east-2", "web", "db", "core")
RESULTS = ("ok",) * 90 + ("changed",) * 7 + ("failed",) * 2 + ("skipped",)


def run_id(rng: random.Random, style: int, n: int) -> str:
    if style == 0:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if style == 1:
        return f"{rng.getrandbits(128):032x}"
    if style == 2:
        return "".join(rng.choice("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for _ in range(26))
    return f"run-{n}"


def timestamp(ms: int, style: int) -> str:
    iso = iso_from_ms(ms)
    if style == 0:
        return iso
    if style == 1:
        return iso.replace(".000Z", "Z")[:19] + "Z"
    return iso[:19] + "+00:00"


def config_version(rng: random.Random, style: int, n: int) -> str | None:
    if style == 0:
        return f"{rng.getrandbits(160):040x}"[:12]
    if style == 1:
        return f"v{1 + n // 40}.{n // 8 % 5}.{n % 8}"
    if style == 2:
        return f"2026-{1 + n // 30 % 12:02d}-{1 + n % 28:02d}"
    return None


def envoy_states(count: int, seed: int) -> list[StoredEnvoy]:
    """`count` envoys, each after 8-14 runs, through the real rules."""
    rng = random.Random(seed)
    rules = Rules(default_interval_s=1800)
    out: list[StoredEnvoy] = []
    for i in range(count):
        tool = rng.choice(tuple(KINDS))
        id_style, ts_style, cv_style = rng.randrange(4), rng.randrange(3), rng.randrange(4)
        host = f"{rng.choice(WORDS)}-{rng.randrange(100_000):05d}.{rng.choice(LABEL_VALUES)}"
        labels = {k: rng.choice(LABEL_VALUES) for k in rng.sample(LABEL_KEYS, rng.randrange(4))}
        catalog = [
            (rng.choice(KINDS[tool]).format(w=rng.choice(WORDS), n=rng.randrange(50)),
             rng.choice(MODULES))
            for _ in range(rng.randint(3, 60))
        ]  # fmt: skip
        start = T0_MS + rng.randrange(30 * 86_400_000)
        state: EnvoyState | None = apply_event(
            None,
            Enrollment(host, "enrolled", timestamp(start, ts_style), labels, None),
            start,
            rules,
        ).state
        for r in range(rng.randint(8, 14)):
            finished = start + (r + 1) * 1_800_000 + rng.randrange(60_000)
            resources = tuple(
                Resource(rid, module, rng.choice(RESULTS))  # type: ignore[arg-type]
                for rid, module in catalog
            )
            errors = (
                (ModuleError(rng.choice(MODULES), "exit status 1"),) if rng.random() < 0.02 else ()
            )
            run = Run(
                host,
                run_id(rng, id_style, i * 100 + r),
                timestamp(finished - rng.randrange(1_000, 120_000), ts_style),
                timestamp(finished, ts_style),
                finished,
                resources,
                errors,
                config_version(rng, cv_style, r),
            )
            state = apply_event(state, run, finished, rules).state
        assert state is not None
        out.append(StoredEnvoy(rng.randrange(64), state))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DICTIONARY_PATH)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    args = parser.parse_args()
    tails: list[bytes | bytearray | memoryview] = [
        encode_tail(s.state) for s in envoy_states(args.samples, SEED)
    ]
    trained = zstandard.train_dictionary(DICTIONARY_BYTES, tails, dict_id=1, level=3, threads=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(trained.as_bytes())
    print(f"{args.out}: {len(trained.as_bytes())} bytes from {len(tails)} tails")


if __name__ == "__main__":
    main()
