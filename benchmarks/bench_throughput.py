"""Throughput on a preloaded backlog, side by side in one run on one broker and one topic:
the bare aiokafka ceiling, the same loop with our pure rules, the Quix Streams peer, and a
real `vigo-processor worker`, each reading the whole topic as a fresh consumer group.

Run: .venv/bin/python benchmarks/bench_throughput.py [--runs 100000] [--envoys 10000]
     [--partitions 8] [--skip-quix] [--profile] [--quick]
     (VIGO_TEST_KAFKA=host:port uses a running broker; otherwise one is started.)

The topic is the worker's own input, `<prefix>envoy.runs`: N SPEC-shaped runs (3-8
resources) spread over the envoys, 81% clean, 15% one changed resource, 3% one failed
resource, 1% all failed; unknown envoys enroll implicitly (SPEC section 3).

Each system is timed from its start (process start for the peer and the worker) until
its group has committed every offset of the topic ("events/s, start-up included"), and
from its first commit to the last ("steady"). The ceiling and the rules loop commit once,
at the end. `--profile` samples the worker with py-spy while it works off the backlog
and prints the functions with the most samples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer
from benchcommon import (
    REPO,
    CommitWatch,
    Incomplete,
    broker,
    build_runs,
    create_topics,
    machine,
    new_prefix,
    preload,
    table,
)

from projections.envoy import EnvoyState, Position, Rules, apply_event
from tests.harness import Worker, worker_config
from topics.decode import decode_input
from topics.events import DeadLetter, RecordMeta
from topics.names import TopicNames

nan = float("nan")
RUNS_INDEX = 2  # position of the runs topic in TopicNames.inputs


class Result:
    def __init__(self, system: str, events: int, total_s: float, steady: float) -> None:
        self.system, self.events, self.total_s, self.steady = system, events, total_s, steady

    @property
    def rate(self) -> float:
        return self.events / self.total_s


async def aiokafka_loop(bootstrap: str, topic: str, total: int, rules: bool) -> Result:
    """One consumer, orjson (decode only) or decode_input + apply_event into a dict."""
    started = time.perf_counter()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"bench-{'rules' if rules else 'ceiling'}-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
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
    name = (
        "aiokafka + decode_input + apply_event into a dict"
        if rules
        else "aiokafka + orjson, decode only (ceiling)"
    )
    return Result(name, seen, done - started, seen / (done - first))


def quix_python() -> str:
    out = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "quix_env.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def quix_peer(bootstrap: str, topic: str, output: str, total: int) -> Result:
    python = quix_python()
    group = f"bench-quix-{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            python,
            str(REPO / "benchmarks" / "peer_quix.py"),
            "--bootstrap",
            bootstrap,
            "--input",
            topic,
            "--output",
            output,
            "--group",
            group,
        ],
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
            total_s, steady_s, first_n = asyncio.run(watch())
        except Incomplete:
            out, err = proc.communicate(timeout=30)
            raise SystemExit(f"quix peer failed:\n{out}\n{err[-3000:]}") from None
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    own = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    if own.get("seconds"):
        print(f"  (quix peer's own clock: {own['seconds']:.1f} s to all committed)")
    return Result(
        "Quix Streams 3.28.1 peer (RocksDB + changelog, changes published)",
        total,
        total_s,
        (total - first_n) / steady_s if steady_s > 0 else nan,
    )


def worker_run(
    bootstrap: str,
    prefix: str,
    topic: str,
    total: int,
    partitions: int,
    profile: bool,
    stall: float,
) -> tuple[list[Result], list[str]]:
    group = f"{prefix}compliance"
    events = total
    with tempfile.TemporaryDirectory() as tmp:
        worker = Worker(
            worker_config(bootstrap, prefix, partitions=partitions, interval="5m"),
            Path(tmp),
            name="bench",
        )
        started = time.perf_counter()
        worker.start(wait=False)
        assert worker.proc is not None
        proc = worker.proc
        spy: tuple[subprocess.Popen[bytes], Path] | None = None
        applied: dict[str, float] = {}
        try:

            async def watch() -> tuple[float, float, int]:
                poller = asyncio.create_task(watch_applied(worker.url, topic, total, applied))
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

            name = "vigo-processor worker (memory store)"
            try:
                total_s, steady_s, first_n = asyncio.run(watch())
            except Incomplete as exc:
                # A worker that stops short is reported with what it committed until then.
                keep = Path(tempfile.gettempdir()) / f"{prefix}worker.log"
                keep.write_text(worker.log_text())
                print(f"  {exc}; the worker's log is kept in {keep}")
                name += f" STOPPED at {exc.done:,}/{total:,}"
                total, total_s, steady_s, first_n = exc.done, exc.seconds, 0.0, 0
        finally:
            listing = stop_profile(spy)
            worker.stop()
    results = [Result(name, total, total_s, (total - first_n) / steady_s if steady_s > 0 else nan)]
    if "at" in applied:
        # The same worker, timed to its last input record applied (its metrics), whatever
        # its commits do.
        steady = (events - applied["first_n"]) / (applied["at"] - applied["first_at"])
        results.append(
            Result(
                "vigo-processor worker, until every run applied (/metrics)",
                events,
                applied["at"] - started,
                steady if applied["at"] > applied["first_at"] else nan,
            )
        )
    return results, listing


async def watch_applied(url: str, topic: str, total: int, into: dict[str, float]) -> None:
    """Poll the worker's vigo_events_total for `topic` until it reaches `total`; note when
    the first and the last were counted (perf_counter) in `into`."""
    needle = f'topic="{topic}"'
    while True:
        await asyncio.sleep(0.2)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--envoys", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--skip-quix", action="store_true")
    parser.add_argument("--skip-worker", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker")
    parser.add_argument(
        "--stall", type=float, default=90, help="give up when the worker's commits stop (s)"
    )
    parser.add_argument("--quick", action="store_true", help="20,000 runs over 2,000 envoys")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.envoys = 20_000, 2_000

    print(machine())
    results: list[Result] = []
    listing: list[str] = []
    with broker() as bootstrap:
        prefix = new_prefix("tp")
        names = TopicNames(prefix)
        asyncio.run(create_topics(bootstrap, [*names.inputs, names.ticks], args.partitions))
        peer_out = f"{prefix}quix.status-changes"
        asyncio.run(create_topics(bootstrap, [peer_out], args.partitions))
        records = build_runs(args.runs, args.envoys)
        t0 = time.perf_counter()
        asyncio.run(preload(bootstrap, names.runs, records))
        total = len(records)
        print(
            f"preloaded {total:,} runs over {args.envoys:,} envoys into {names.runs} "
            f"({args.partitions} partitions) in {time.perf_counter() - t0:.1f} s"
        )
        del records
        for label, rules in (("ceiling", False), ("rules", True)):
            print(f"- {label} ...", flush=True)
            results.append(asyncio.run(aiokafka_loop(bootstrap, names.runs, total, rules)))
        if not args.skip_quix:
            print("- quix peer ...", flush=True)
            results.append(quix_peer(bootstrap, names.runs, peer_out, total))
        if not args.skip_worker:
            print("- worker ...", flush=True)
            worker_results, listing = worker_run(
                bootstrap, prefix, names.runs, total, args.partitions, args.profile, args.stall
            )
            results.extend(worker_results)

    ceiling = results[0].rate
    rows = [
        (
            r.system,
            f"{r.rate:,.0f}",
            f"{r.steady:,.0f}" if r.steady == r.steady else "n/a",
            f"{r.total_s:.1f}",
            f"{r.rate / ceiling:.3f}",
        )
        for r in results
    ]
    print()
    print(f"{total:,} runs, {args.envoys:,} envoys, {args.partitions} partitions")
    header = ("system", "events/s incl. start-up", "events/s steady", "s", "ratio to ceiling")
    print(table(rows, header))
    print("steady: from the first commit seen to the last (n/a: the first was the last)")
    worker = next((r for r in results if r.system.startswith("vigo")), None)
    quix = next((r for r in results if r.system.startswith("Quix")), None)
    if worker is not None:
        print()
        met = worker.rate >= 10_000 and "STOPPED" not in worker.system
        print(f"goal >= 10,000 events/s: {'met' if met else 'NOT met'}")
        if quix is not None:
            faster = worker.rate > quix.rate and "STOPPED" not in worker.system
            print(
                f"goal faster than the Quix peer: {'met' if faster else 'NOT met'} "
                f"(worker / peer = {worker.rate / quix.rate:.2f})"
            )
    if listing:
        print()
        print("\n".join(listing))


if __name__ == "__main__":
    main()
