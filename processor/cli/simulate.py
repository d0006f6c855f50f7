"""`vigo-simulate`: a simulated fleet for the local demo and for trying the product.

Envoys enroll, check in every interval and report runs. A few are troubled on purpose:
some drift on every run (relapsed, then diverged), some fail a module (degraded), one
fails entirely, and some go silent (offline, then stale) so every status and both alerts
show up within minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
import uuid
from dataclasses import dataclass

import click
import orjson
from aiokafka import AIOKafkaProducer

from topics.names import TopicNames
from topics.timestamps import iso_from_ms


@dataclass
class SimEnvoy:
    envoy_id: str
    role: str
    behaviour: str  # healthy | drifting | degraded | failing | silent


BEHAVIOURS = (
    ("drifting", 0.06),
    ("degraded", 0.05),
    ("failing", 0.01),
    ("silent", 0.03),
)


def make_fleet(size: int, seed: int) -> list[SimEnvoy]:
    rng = random.Random(seed)
    fleet = []
    for i in range(size):
        roll, behaviour = rng.random(), "healthy"
        for name, share in BEHAVIOURS:
            if roll < share:
                behaviour = name
                break
            roll -= share
        role = rng.choice(("web", "db", "cache", "batch"))
        fleet.append(SimEnvoy(f"{role}-{i:04d}", role, behaviour))
    return fleet


#: Each run's resources by module. A drifting envoy has its ntp.conf (the first file)
#: rewritten by something outside the configuration before every run, at one
#: config_version: the demo's non-idempotent resource (SPEC 11.3), on top of
#: `vigocli resources top --non-idempotent` within a few rounds.
RESOURCE_IDS = {
    "files": ("file[/etc/ntp.conf]", "file[/etc/motd]", "file[/etc/hosts]",
              "file[/etc/resolv.conf]", "file[/etc/ssh/sshd_config]", "file[/etc/sudoers]"),
    "packages": ("package[openssl]", "package[nginx]", "package[curl]", "package[chrony]"),
    "services": ("service[nginx]", "service[chronyd]"),
}  # fmt: skip


#: SPEC 11.2's demo: from this round on the fleet rolls out `demo-2`, a quarter of it a
#: round; every twelfth envoy never takes it, and is stuck once `rollouts.stuck_after` has
#: passed (envoys whose runs error never remember a version: `(none)`, not stuck).
ROLLOUT_ROUND = 3


def config_version(envoy: SimEnvoy, round_: int) -> str:
    n = int(envoy.envoy_id.rsplit("-", 1)[1])
    if n % 12 == 5 or round_ < ROLLOUT_ROUND + n % 4:
        return "demo-1"
    return "demo-2"


def run_document(
    envoy: SimEnvoy, rng: random.Random, now_ms: int, round_: int = 0
) -> dict[str, object]:
    resources = []
    for module, ids in RESOURCE_IDS.items():
        for j, resource_id in enumerate(ids):
            result = "ok"
            drifts = envoy.behaviour == "drifting" and module == "files" and j == 0
            breaks = envoy.behaviour == "failing" or (
                envoy.behaviour == "degraded" and module == "services"
            )
            if breaks:
                result = "failed"
            elif drifts or rng.random() < 0.01:
                result = "changed"
            resources.append({"id": resource_id, "module": module, "result": result})
    doc: dict[str, object] = {
        "schema": "vigo.run/1",
        "envoy_id": envoy.envoy_id,
        "run_id": str(uuid.uuid4()),
        "started_at": iso_from_ms(now_ms - 4000),
        "finished_at": iso_from_ms(now_ms),
        "config_version": config_version(envoy, round_),
        "resources": resources,
    }
    if envoy.behaviour == "degraded":
        doc["module_errors"] = [{"module": "services", "message": "exit 1"}]
    return doc


async def simulate(
    bootstrap: str, prefix: str, size: int, interval_s: float, seed: int, rounds: int | None
) -> None:
    names = TopicNames(prefix)
    rng = random.Random(seed)
    fleet = make_fleet(size, seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        now = int(time.time() * 1000)
        for envoy in fleet:
            doc = {
                "schema": "vigo.enrollment/1",
                "envoy_id": envoy.envoy_id,
                "action": "enrolled",
                "at": iso_from_ms(now),
                "labels": {"role": envoy.role, "env": "demo"},
                "checkin_interval_s": max(10, int(interval_s)),
            }
            await producer.send(names.enrollments, orjson.dumps(doc), key=envoy.envoy_id.encode())
        done = 0
        click.echo(f"simulating {size} envoys every {interval_s:g}s on {bootstrap} ({prefix})")
        while not stop.is_set() and (rounds is None or done < rounds):
            now = int(time.time() * 1000)
            for envoy in fleet:
                if envoy.behaviour == "silent" and done >= 2:
                    continue  # falls silent after two rounds: offline, then stale
                key = envoy.envoy_id.encode()
                checkin = {
                    "schema": "vigo.checkin/1",
                    "envoy_id": envoy.envoy_id,
                    "at": iso_from_ms(now),
                }
                await producer.send(names.checkins, orjson.dumps(checkin), key=key)
                await producer.send(
                    names.runs, orjson.dumps(run_document(envoy, rng, now, done)), key=key
                )
            await producer.flush()
            done += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
    finally:
        await producer.stop()


@click.command()
@click.option(
    "--bootstrap",
    default="localhost:9092",
    envvar="VIGO_KAFKA__BOOTSTRAP_SERVERS",
    show_default=True,
    help="Kafka bootstrap servers.",
)
@click.option("--prefix", default="vigo.", envvar="VIGO_KAFKA__TOPIC_PREFIX", show_default=True)
@click.option("--envoys", default=200, show_default=True, help="Fleet size.")
@click.option("--interval", default=10.0, show_default=True, help="Seconds between rounds.")
@click.option("--rounds", type=int, default=None, help="Stop after this many rounds.")
@click.option("--seed", default=42, show_default=True)
def main(
    bootstrap: str, prefix: str, envoys: int, interval: float, rounds: int | None, seed: int
) -> None:
    """Publish a simulated fleet's enrollments, check-ins and runs."""
    asyncio.run(simulate(bootstrap, prefix, envoys, interval, seed, rounds))


if __name__ == "__main__":
    main()
