"""Throughput on a preloaded backlog, side by side in one run on one broker: the aiokafka
baseline (bare orjson, the ceiling; and our pure rules into a dict), the Quix Streams
peer, and a real `vigo-processor worker` as production runs it, each reading the whole
topic as a fresh consumer group; every figure the median of 3 repetitions.

Run: .venv/bin/python benchmarks/bench_throughput.py [--runs 300000] [--envoys 30000]
     [--partitions 8] [--repeats 3] [--skip-quix] [--skip-worker] [--profile] [--quick]
     (VIGO_TEST_KAFKA=host:port uses a running broker; otherwise one is started.)

Each repetition has its own topic, `<prefix>envoy.runs`: N SPEC-shaped runs (3-8
resources) spread over the envoys, 81% clean, 15% one changed resource, 3% one failed
resource, 1% all failed; unknown envoys enroll implicitly (SPEC section 3). Before any
system is timed: `__consumer_offsets` exists (a throw-away group committed one offset),
and so does every topic the worker would create (its plan, `processor/topics_admin.py`),
the Quix peer's output among them, with the input's partition count. The order of the
three systems rotates from one repetition to the next, so each goes first once in three.

- baseline: aiokafka, commit once at the end; timed in-process. With it, the lean designs
  (`lean.py`: the worker's per-event work on bare aiokafka with its changelog and status
  changes, no store; three ways of holding state) and the floor (`floor.py`: that work
  in-process, no Kafka, as CPU time): what the worker's own work costs without Faust.
- Quix peer (benchmarks/peer_quix.py, its own virtualenv): stops itself fairly, once it
  has processed every record (`on_message_processed` counting to the topic's size, then
  `app.stop()`, which forces its final commit) instead of being waited for until its next
  `commit_interval` boundary; settings in peer_quix.py.
- worker: `processor.store: rocksdb` with a data directory, threshold and stale mail on
  to a local SMTP sink (aiosmtpd), checkin interval 5m.

"events/s, start-up included": from the start (process start for the peer and the worker)
until the group has committed every offset of the topic. "steady": from the first record
processed (the peer's own callback, the worker's `vigo_events_total` on /metrics or its
first commit, whichever is seen first) to the last commit; "start-up" is the time before
that first record. `--profile` samples the worker of the last repetition with py-spy and
prints the functions with the most samples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
from benchcommon import (
    REPO,
    CommitWatch,
    Incomplete,
    backlog_consumer,
    broker,
    build_runs,
    create_offsets_topic,
    create_topics,
    machine,
    new_prefix,
    preload,
    table,
)
from floor import floor_costs
from lean import VARIANTS, lean_loop

from processor.config import Settings
from processor.topics_admin import topic_plan
from projections.envoy import EnvoyState, Position, Rules, apply_event
from tests.harness import Worker, worker_config
from tests.smtpserver import SmtpServer
from topics.decode import decode_input
from topics.events import DeadLetter, RecordMeta
from topics.names import TopicNames

nan = float("nan")
RUNS_INDEX = 2  # position of the runs topic in TopicNames.inputs
QUIX_VERSION = "3.28.1"  # benchmarks/quix_env.sh pins it

CEILING = "aiokafka + orjson, decode only (ceiling)"
RULES = "baseline: aiokafka + decode_input + apply_event into a dict"
FLOOR = {
    "decode": "floor: decode_input alone, in-process, no Kafka",
    "rules": "floor: + apply_event into a dict (no Kafka)",
    "worker work": "floor: + stored record read and written, changes encoded (no Kafka)",
}
QUIX = f"Quix Streams {QUIX_VERSION} (RocksDB + changelog, fair stop)"
WORKER = "vigo-processor worker (rocksdb store, mail on)"


class Result:
    """One system's one repetition. `first` and `first_n`: when the first record was seen
    processed (seconds since the start) and how many were done by then."""

    def __init__(
        self, system: str, events: int, total_s: float, first: float, first_n: float
    ) -> None:
        self.system, self.events, self.total_s = system, events, total_s
        self.first, self.first_n = first, first_n
        self.stopped = False
        #: CPU seconds (user + system, every thread) the system's process used for the
        #: whole repetition, start-up included, as the OS counts them; nan if unknown.
        self.cpu_s = nan

    @property
    def cpu_us_per_event(self) -> float:
        return 1e6 * self.cpu_s / self.events if self.events else nan

    @property
    def rate(self) -> float:
        return self.events / self.total_s

    @property
    def steady(self) -> float:
        span = self.total_s - self.first
        return (self.events - self.first_n) / span if span > 0 else nan


async def aiokafka_loop(bootstrap: str, topic: str, total: int, rules: bool) -> Result:
    """One consumer, orjson (decode only) or decode_input + apply_event into a dict."""
    started = time.perf_counter()
    cpu_started = time.process_time()  # this process: the timed loop and its client
    consumer = backlog_consumer(bootstrap, topic, "rules" if rules else "ceiling")
    await consumer.start()
    states: dict[bytes, EnvoyState | None] = {}
    decoded: dict[bytes, object] = {}
    policy = Rules(default_interval_s=300)
    seen = 0
    first: float | None = None
    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if first is None and batch:
                first = time.perf_counter()
            for tp, messages in batch.items():
                for m in messages:
                    seen += 1
                    if not rules:
                        decoded[m.key] = orjson.loads(m.value)
                        continue
                    meta = RecordMeta(tp.topic, tp.partition, m.offset, m.timestamp)
                    event = decode_input(m.key, m.value, meta)
                    if isinstance(event, DeadLetter):
                        continue
                    applied = apply_event(
                        states.get(m.key),
                        event,
                        m.timestamp,
                        policy,
                        Position(RUNS_INDEX, m.offset),
                    )
                    states[m.key] = applied.state
        await consumer.commit()
    finally:
        await consumer.stop()
    done = time.perf_counter()
    assert first is not None
    result = Result(RULES if rules else CEILING, seen, done - started, first - started, 0)
    result.cpu_s = time.process_time() - cpu_started
    return result


def quix_python() -> str:
    out = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "quix_env.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def quix_peer(
    python: str, bootstrap: str, topic: str, output: str, total: int, commit_interval: float
) -> Result:
    group = f"bench-quix-{uuid.uuid4().hex[:6]}"
    command = [
        python,
        str(REPO / "benchmarks" / "peer_quix.py"),
        *("--bootstrap", bootstrap, "--input", topic, "--output", output),
        *("--group", group, "--total", str(total)),
        *("--commit-interval", str(commit_interval)),
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:

        async def watch() -> tuple[float, float, int]:
            async with CommitWatch(bootstrap, group, topic) as w:
                return await w.until(total, started, 900, alive=lambda: proc.poll() is None)

        try:
            total_s, _, _ = asyncio.run(watch())
        except Incomplete:
            out, err = proc.communicate(timeout=30)
            raise SystemExit(f"quix peer failed:\n{out}\n{err[-3000:]}") from None
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    own = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    if "first" not in own or "last" not in own:
        raise SystemExit(f"quix peer said nothing of its own clock:\n{out}\n{err[-3000:]}")
    # perf_counter is CLOCK_MONOTONIC on Linux: the peer's readings are on our clock.
    print(
        f"    (peer's own clock: process up {own['started'] - started:.2f} s after Popen, "
        f"first record {own['first'] - started:.2f} s, last {own['last'] - started:.2f} s, "
        f"final commit done {own['stopped'] - started:.2f} s; all committed seen at "
        f"{total_s:.2f} s)",
        flush=True,
    )
    result = Result(QUIX, total, total_s, own["first"] - started, 1)
    result.cpu_s = own.get("cpu_s", nan)
    return result


def worker_run(
    bootstrap: str,
    prefix: str,
    topic: str,
    total: int,
    partitions: int,
    smtp_port: int,
    profile: bool,
    stall: float,
) -> tuple[Result, list[str]]:
    group = f"{prefix}compliance"
    config = worker_config(
        bootstrap,
        prefix,
        partitions=partitions,
        interval="5m",
        processor={"store": "rocksdb"},
        smtp={
            "host": "127.0.0.1",
            "port": smtp_port,
            "from": "vigo@localhost",
            "to": ["ops@localhost"],
            "events": {"convergence.threshold": {"threshold": 90}, "envoy.stale": {}},
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        # Worker puts processor.data_dir in tmp: RocksDB tables on disk, as in production.
        worker = Worker(config, Path(tmp), name="bench")
        started = time.perf_counter()
        worker.start(wait=False)
        assert worker.proc is not None
        proc = worker.proc
        spy: tuple[subprocess.Popen[bytes], Path] | None = None
        applied: dict[str, float] = {}
        try:

            async def watch() -> tuple[float, float, int]:
                # Only the first count is used; polling on would cost the worker's main
                # thread (1% of it at 10 scrapes a second, py-spy), and the peer's nothing.
                poller = asyncio.create_task(watch_applied(worker.url, topic, 1, applied))
                try:
                    async with CommitWatch(bootstrap, group, topic) as w:
                        if profile:  # sample the busy part only: from the first commit on
                            until = time.perf_counter() + stall
                            while await w.committed() == 0 and proc.poll() is None:
                                if time.perf_counter() > until:
                                    break
                                await asyncio.sleep(0.1)
                            nonlocal spy
                            spy = start_profile(proc.pid, Path(tmp))
                        return await w.until(
                            total, started, 1800, alive=lambda: proc.poll() is None, stall=stall
                        )
                finally:
                    poller.cancel()

            try:
                total_s, steady_s, first_n = asyncio.run(watch())
                result = Result(WORKER, total, total_s, total_s - steady_s, first_n)
            except Incomplete as exc:
                # A worker that stops short is reported with what it committed until then.
                keep = Path(tempfile.gettempdir()) / f"{prefix}worker.log"
                keep.write_text(worker.log_text())
                print(f"    {exc}; the worker's log is kept in {keep}")
                result = Result(WORKER, exc.done, exc.seconds, exc.seconds, exc.done)
                result.stopped = True
        finally:
            listing = stop_profile(spy)
            cpu_s = process_cpu_s(proc.pid)
            worker.stop()
    result.cpu_s = cpu_s
    # The first record processed: its first commit, or its /metrics count if seen sooner.
    if "first_at" in applied and applied["first_at"] - started < result.first:
        result.first, result.first_n = applied["first_at"] - started, applied["first_n"]
    return result, listing


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process, all its threads (/proc/PID/stat,
    fields 14 and 15, in clock ticks); nan where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def watch_applied(url: str, topic: str, total: int, into: dict[str, float]) -> None:
    """Poll the worker's vigo_events_total for `topic` until it reaches `total`; note when
    the first and the last were counted (perf_counter) in `into`. Each scrape costs the
    worker a little: poll only as long as the figure is needed."""
    needle = f'topic="{topic}"'
    while True:
        await asyncio.sleep(0.1)
        try:
            text = await asyncio.to_thread(_get, url + "/metrics")
        except OSError:
            continue
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("vigo_events_total{") and needle in line
        )
        now = time.perf_counter()
        if counted > 0 and "first_at" not in into:
            into["first_at"], into["first_n"] = now, counted
        if counted >= total:
            into["at"] = now
            return


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def start_profile(pid: int, tmp: Path) -> tuple[subprocess.Popen[bytes], Path] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("  --profile: py-spy not found (.venv/bin/pip install py-spy); not profiling")
        return None
    out = tmp / "profile.txt"
    proc = subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--nonblocking", "--format", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, out


def stop_profile(spy: tuple[subprocess.Popen[bytes], Path] | None, top: int = 15) -> list[str]:
    """py-spy's collapsed stacks -> the functions with the most samples, own and total."""
    if spy is None:
        return []
    proc, out = spy
    proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    if not out.exists():
        return ["(py-spy wrote no profile: ptrace may not be permitted here)"]
    kept = Path(tempfile.gettempdir()) / "vigo-worker-profile.txt"
    shutil.copyfile(out, kept)  # the collapsed stacks, for a closer look
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        samples += n
        own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            total[frame] += n
    idle = sum(n for frame, n in own.items() if frame.startswith(IDLE))
    lines = [
        f"py-spy, from the worker's first commit to its last: {samples} samples, "
        f"{100 * idle / max(samples, 1):.0f}% of them waiting in the event loop's select"
    ]
    lines.append(f"{'own %':>6} {'total %':>7}  function (file), by own samples")
    for frame, n in own.most_common(top):
        lines.append(f"{100 * n / samples:6.1f} {100 * total[frame] / samples:7.1f}  {frame}")
    lines.append("")
    lines.append(f"{'total %':>7}  function (file), by samples including callees")
    inclusive = [(f, n) for f, n in total.most_common() if not _wrapper(f)]
    for frame, n in inclusive[:top]:
        lines.append(f"{100 * n / samples:7.1f}  {frame}")
    return lines


IDLE = ("EpollSelector.select", "select (selectors.py)")
#: Frames every sample passes through (the loop, the CLI): left out of the inclusive list.
WRAPPERS = (
    "(asyncio/",
    "(click/",
    "(selectors.py",
    "(threading.py",
    "(faust/cli/",
    "(vigo-processor",
    "(processor/cli/worker.py",
    "(mode/worker.py",
    "App.main (",
)


def _wrapper(frame: str) -> bool:
    return any(marker in frame for marker in WRAPPERS)


def _short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def prepare(bootstrap: str, partitions: int, records: list[tuple[bytes, bytes]]) -> TopicNames:
    """A fresh prefix: every topic the worker would create (its own plan), the peer's
    output, all with the input's partition count; the runs preloaded."""
    names = TopicNames(new_prefix("tp"))
    kafka = {"bootstrap_servers": bootstrap, "topic_prefix": names.prefix, "partitions": partitions}
    settings = Settings.model_validate({"kafka": kafka})
    plan = topic_plan(settings)

    async def create() -> None:
        for name, (count, configs) in plan.items():
            await create_topics(bootstrap, [name], count, configs)
        outputs = [peer_output(names)]
        for variant in VARIANTS:
            outputs += [lean_changelog(names, variant), lean_changes(names, variant)]
        await create_topics(bootstrap, outputs, partitions)

    asyncio.run(create())
    t0 = time.perf_counter()
    asyncio.run(preload(bootstrap, names.runs, records))
    print(
        f"  preloaded {len(records):,} runs into {names.runs} ({partitions} partitions) "
        f"in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    return names


def peer_output(names: TopicNames) -> str:
    return f"{names.prefix}quix.status-changes"


def lean_changelog(names: TopicNames, variant: str) -> str:
    return f"{names.prefix}lean-{VARIANTS.index(variant)}.envoys-changelog"


def lean_changes(names: TopicNames, variant: str) -> str:
    return f"{names.prefix}lean-{VARIANTS.index(variant)}.status-changes"


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300_000)
    parser.add_argument("--envoys", type=int, default=30_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeats", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--skip-quix", action="store_true")
    parser.add_argument("--skip-worker", action="store_true")
    parser.add_argument(
        "--quix-commit-interval", type=float, default=5.0, help="the peer's commit_interval (s)"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the last worker")
    parser.add_argument(
        "--stall", type=float, default=90, help="give up when the worker's commits stop (s)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="20,000 runs over 2,000 envoys, one repetition"
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.envoys = 20_000, 2_000
    repeats = args.repeats or (1 if args.quick else 3)

    print(machine())
    print(" ".join(["command:", Path(sys.executable).name, *sys.argv]))
    clock = time.perf_counter()
    python = "" if args.skip_quix else quix_python()
    records = build_runs(args.runs, args.envoys)
    total = len(records)
    results: dict[str, list[Result]] = {}
    listing: list[str] = []
    mails: list[int] = []
    systems: list[tuple[str, Callable[[TopicNames, int], None]]] = []

    with broker() as bootstrap, SmtpServer() as smtp:

        def baseline(names: TopicNames, rep: int) -> None:
            for rules in (False, True):
                result = asyncio.run(aiokafka_loop(bootstrap, names.runs, total, rules))
                results.setdefault(result.system, []).append(result)
                print(f"    {result.system}: {result.rate:,.0f} events/s", flush=True)
            for variant in VARIANTS:
                lean = asyncio.run(
                    lean_loop(
                        bootstrap,
                        names.runs,
                        lean_changelog(names, variant),
                        lean_changes(names, variant),
                        total,
                        variant,
                    )
                )
                result = Result(variant, lean[0], lean[1], lean[2], 0)
                result.cpu_s = lean[3]
                results.setdefault(variant, []).append(result)
                print(f"    {variant}: {result.rate:,.0f} events/s", flush=True)
            for name, us in floor_costs(records).items():
                result = Result(FLOOR[name], total, us * total / 1e6, 0, 0)
                result.cpu_s = result.total_s
                results.setdefault(result.system, []).append(result)
            print(f"    floor, CPU us/event: {result.cpu_us_per_event:.1f}", flush=True)

        def peer(names: TopicNames, rep: int) -> None:
            output = peer_output(names)
            result = quix_peer(
                python, bootstrap, names.runs, output, total, args.quix_commit_interval
            )
            results.setdefault(result.system, []).append(result)
            print(f"    {result.system}: {result.rate:,.0f} events/s", flush=True)

        def worker(names: TopicNames, rep: int) -> None:
            nonlocal listing
            before = len(smtp.messages)
            result, listing_ = worker_run(
                bootstrap,
                names.prefix,
                names.runs,
                total,
                args.partitions,
                smtp.port,
                args.profile and rep == repeats - 1,
                args.stall,
            )
            listing = listing_ or listing
            mails.append(len(smtp.messages) - before)
            results.setdefault(result.system, []).append(result)
            print(f"    {result.system}: {result.rate:,.0f} events/s", flush=True)

        systems.append(("baseline", baseline))
        if not args.skip_quix:
            systems.append(("quix", peer))
        if not args.skip_worker:
            systems.append(("worker", worker))

        for rep in range(repeats):
            print(f"repetition {rep + 1}/{repeats}:", flush=True)
            names = prepare(bootstrap, args.partitions, records)
            if rep == 0:
                warmup = f"{names.prefix}warmup"
                asyncio.run(create_topics(bootstrap, [warmup], 1))
                asyncio.run(create_offsets_topic(bootstrap, warmup))
            order = systems[rep % len(systems) :] + systems[: rep % len(systems)]
            for label, run in order:
                print(f"  - {label} ...", flush=True)
                run(names, rep)
    elapsed = time.perf_counter() - clock
    report(results, total, args, repeats, mails)
    print(f"whole benchmark: {elapsed / 60:.1f} min")
    if listing:
        print()
        print("\n".join(listing))


def report(
    results: dict[str, list[Result]],
    total: int,
    args: argparse.Namespace,
    repeats: int,
    mails: list[int],
) -> None:
    medians = {system: median([r.rate for r in runs]) for system, runs in results.items()}
    ceiling = medians.get(CEILING, nan)
    rows = []
    for system, runs in results.items():
        stopped = " STOPPED" if any(r.stopped for r in runs) else ""
        rows.append(
            (
                system + stopped,
                f"{medians[system]:,.0f}",
                f"{median([r.steady for r in runs]):,.0f}",
                f"{median([r.first for r in runs]):.1f}",
                f"{median([r.total_s for r in runs]):.1f}",
                " / ".join(f"{r.rate:,.0f}" for r in runs),
                f"{medians[system] / ceiling:.3f}",
                f"{median([r.cpu_us_per_event for r in runs]):,.1f}",
            )
        )
    print()
    print(
        f"{total:,} runs, {args.envoys:,} envoys, {args.partitions} partitions; median of {repeats}"
    )
    header = (
        "system",
        "events/s incl. start-up",
        "steady",
        "start-up s",
        "s",
        "each repetition",
        "of ceiling",
        "CPU us/event",
    )
    print(table(rows, header))
    print(
        "steady: from the first record processed to the last offset committed; start-up: "
        "from the start to that first record; CPU us/event: the process' user + system CPU "
        "time (all threads, start-up included, as the OS counts it) per event"
    )
    if mails:
        print(f"mails the worker sent to the SMTP sink, each repetition: {mails}")
    worker = medians.get(WORKER)
    quix = medians.get(QUIX)
    if worker is not None:
        print()
        met = worker >= 10_000 and not any(r.stopped for r in results[WORKER])
        print(f"goal >= 10,000 events/s: {'met' if met else 'NOT met'}")
        if quix is not None:
            steady = median([r.steady for r in results[WORKER]]) / median(
                [r.steady for r in results[QUIX]]
            )
            print(
                f"worker / Quix peer: {worker / quix:.2f} start-up included, "
                f"{steady:.2f} steady ({'ahead' if worker > quix else 'behind'})"
            )
    if quix is not None:
        for variant in VARIANTS:
            if variant in medians:
                print(f"{variant} / Quix peer: {medians[variant] / quix:.2f}")


if __name__ == "__main__":
    main()
