"""Produce -> status change latency of a caught-up worker at a steady input rate.

Run: .venv/bin/python benchmarks/bench_latency.py [--rate 5000] [--seconds 30]
     [--baseline-rate 1000] [--baseline-seconds 10] [--envoys 10000] [--repeats 3] [--quick]
     (VIGO_TEST_KAFKA=host:port uses a running broker; otherwise one is started.)

One worker (memory store) is started on fresh topics and waited for (/readyz). Runs are
then sent at a steady pace (in 10 ms slices) to `<prefix>envoy.runs`, alternating clean
and changed per envoy, so every run flips its envoy's status (converged <-> drifted; an
envoy's first run enrolls it) and yields one status change. Latency is the status-change
record's timestamp minus the run record's timestamp (the worker's CreateTime minus the
broker's LogAppendTime of the run, one host clock: the producer-to-broker leg is not in
it), matched by run_id. A low-rate baseline runs first, then the target rate; both are
repeated (`--repeats`, 3 by default) on the same worker, and the medians reported with
each repetition's p99, since one run's tail on a shared 2-core machine moves by two to
ten times from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from benchcommon import (
    broker,
    create_topics,
    envoy_id,
    iso,
    machine,
    new_prefix,
    preload,
    table,
)

from tests.harness import Worker, worker_config
from topics.names import TopicNames

PARTITIONS = 8


#: The figures a load reports that are summarised as medians.
FIGURES = ("rate", "p50", "p99", "max")


def run_doc(envoy: str, run_id: str, k: int) -> dict[str, object]:
    """The envoy's k-th run: clean for even k, one changed resource for odd k."""
    finished_ms = 1_795_000_000_000 + k * 60_000
    return {
        "schema": "vigo.run/1",
        "envoy_id": envoy,
        "run_id": run_id,
        "started_at": iso(finished_ms - 4000),
        "finished_at": iso(finished_ms),
        "resources": [
            {"id": "file[/etc/motd]", "module": "files", "result": "ok"},
            {"id": "package[nginx]", "module": "packages", "result": "changed" if k % 2 else "ok"},
        ],
    }


def wait_ready(worker: Worker, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with urllib.request.urlopen(worker.url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"worker not ready after {timeout}s:\n{worker.log_text()[-3000:]}")


async def steady(
    bootstrap: str,
    names: TopicNames,
    envoys: int,
    rate: int,
    seconds: float,
    drain: float,
    warmed: dict[int, int],
) -> dict[str, float]:
    """Send `rate` runs/s for `seconds`; collect the changes; return the figures."""
    consumer = AIOKafkaConsumer(
        names.status_changes,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    await consumer.seek_to_end()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1)
    await producer.start()
    sent: dict[str, int] = {}
    arrived: dict[str, int] = {}
    runs_per_envoy = warmed

    async def collect() -> None:
        while True:
            for messages in (await consumer.getmany(timeout_ms=100)).values():
                for m in messages:
                    run_id = orjson.loads(m.value).get("run_id")
                    if run_id in sent:
                        arrived[run_id] = m.timestamp

    # Every run is built and serialised before the clock starts: the load generator shares
    # the machine's two cores with the broker and the worker, so what it does while sending
    # is kept to the producer's send.
    planned = int(rate * seconds) + rate
    payloads: list[tuple[str, bytes, bytes]] = []
    counts = dict(runs_per_envoy)
    for i in range(planned):
        n = i % envoys
        k = counts.get(n, 0)
        counts[n] = k + 1
        run_id = str(uuid.uuid4())
        envoy = envoy_id(n)
        payloads.append((run_id, envoy.encode(), orjson.dumps(run_doc(envoy, run_id, k))))

    collector = asyncio.create_task(collect())
    await asyncio.sleep(0.5)
    # The load generator's own collector stays off while it sends: it keeps every run it
    # sent and a future for each, and its full collections (up to 140 ms by the end of a
    # run) held runs stamped with their send time, a delay charged to the worker.
    gc.disable()
    slice_s = 0.01
    started = time.monotonic()
    due = 0.0
    i = 0
    futures = []
    try:
        while (elapsed := time.monotonic() - started) < seconds and i < planned:
            due = (elapsed + slice_s) * rate
            while i < min(due, planned):
                run_id, key, value = payloads[i]
                now_ms = int(time.time() * 1000)
                sent[run_id] = now_ms
                futures.append(await producer.send(names.runs, value, key=key, timestamp_ms=now_ms))
                i += 1
            await asyncio.sleep(max(0.0, started + (i / rate) - time.monotonic()))
        for j in range(i):  # what was sent: the next phase's runs go on flipping each envoy
            runs_per_envoy[j % envoys] = runs_per_envoy.get(j % envoys, 0) + 1
        await asyncio.gather(*futures)
        produced_s = time.monotonic() - started
        deadline = time.monotonic() + drain
        while len(arrived) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        gc.enable()
        collector.cancel()
        await producer.stop()
        await consumer.stop()
    lat = sorted(arrived[r] - t for r, t in sent.items() if r in arrived)
    if not lat:
        return {"sent": len(sent), "received": 0, "rate": len(sent) / produced_s}
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
    return {
        "sent": len(sent),
        "received": len(lat),
        "rate": len(sent) / produced_s,
        "p50": q[49],
        "p99": q[98],
        "max": lat[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--baseline-rate", type=int, default=1000)
    parser.add_argument("--baseline-seconds", type=float, default=10)
    parser.add_argument("--envoys", type=int, default=10_000)
    parser.add_argument("--drain", type=float, default=60, help="max wait for late changes")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="both loads this many times on the same worker; medians reported (1 with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="2,000/s for 10 s, 500/s for 5 s")
    args = parser.parse_args()
    if args.quick:
        args.rate, args.seconds, args.baseline_rate, args.baseline_seconds = 2000, 10, 500, 5
        args.drain, args.repeats = 30, 1
    print(machine())
    results: list[tuple[int, float, dict[str, float]]] = []
    with broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        prefix = new_prefix("lat")
        names = TopicNames(prefix)
        asyncio.run(
            create_topics(bootstrap, [*names.inputs, names.ticks, names.status_changes], PARTITIONS)
        )
        # Every envoy enrolled (implicitly, by a first clean run) before the worker starts:
        # the measured runs then flip converged <-> drifted.
        warm = [
            (envoy_id(n).encode(), orjson.dumps(run_doc(envoy_id(n), str(uuid.uuid4()), 0)))
            for n in range(args.envoys)
        ]
        asyncio.run(preload(bootstrap, names.runs, warm))
        warmed = dict.fromkeys(range(args.envoys), 1)
        worker = Worker(
            worker_config(bootstrap, prefix, partitions=PARTITIONS, interval="5m"),
            Path(tmp),
            name="lat",
        )
        worker.start(wait=False)
        try:
            ready = wait_ready(worker)
            print(f"worker ready, caught up with {args.envoys:,} first runs, in {ready:.1f} s")
            loads = ((args.baseline_rate, args.baseline_seconds), (args.rate, args.seconds))
            for repetition in range(args.repeats):
                for rate, seconds in loads:
                    print(
                        f"- repetition {repetition + 1}/{args.repeats}: {rate:,} runs/s "
                        f"for {seconds:g} s ...",
                        flush=True,
                    )
                    figures = asyncio.run(
                        steady(bootstrap, names, args.envoys, rate, seconds, args.drain, warmed)
                    )
                    results.append((rate, seconds, figures))
                    time.sleep(2)
        finally:
            worker.stop()
            text = worker.log_text()
            print(
                f"worker log: {text.count('were not delivered')} delivery gaps read again, "
                f"{text.count('made no progress')} stalled partitions fetched again"
            )
            if any(f["received"] < f["sent"] for _, _, f in results):
                log = worker.log_text().splitlines()
                noted = [line for line in log if "WARN" in line or "ERROR" in line]
                print("worker log, warnings and errors (last 20):", *noted[-20:], sep="\n  ")
                keep = Path(tempfile.gettempdir()) / f"{prefix}worker.log"
                keep.write_text("\n".join(log))
                print(f"worker log kept in {keep}")
    rows = []
    medians: dict[int, dict[str, float]] = {}
    for rate, seconds in dict.fromkeys((r, s) for r, s, _ in results):
        runs = [f for r, _, f in results if r == rate]
        med = {k: statistics.median(f.get(k, float("nan")) for f in runs) for k in FIGURES}
        med["received"] = min(f["received"] for f in runs)
        med["sent"] = max(f["sent"] for f in runs)
        medians[rate] = med
        rows.append(
            (
                f"{rate:,}/s x {seconds:g} s",
                f"{med['rate']:,.0f}",
                f"{sum(f['received'] for f in runs):,.0f}/{sum(f['sent'] for f in runs):,.0f}",
                f"{med['p50']:,.0f}",
                f"{med['p99']:,.0f}",
                f"{med['max']:,.0f}",
                " / ".join(f"{f.get('p99', float('nan')):,.0f}" for f in runs),
            )
        )
    print()
    print(
        "run record -> status-change record (ms), one worker, memory store; "
        f"median of {args.repeats}"
    )
    header = ("target", "sent/s", "changes/runs", "p50 ms", "p99 ms", "max ms", "each p99")
    print(table(rows, header))
    last = medians[args.rate]
    every_change = all(f["received"] == f["sent"] for _, _, f in results)
    if not math.isnan(last["p99"]):
        ok = last["p99"] < 250 and every_change
        print(f"goal p99 < 250 ms at {args.rate:,}/s (median): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
