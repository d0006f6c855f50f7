"""`vigo-processor`: Faust's own command line (worker, tables, ...) on an app built from
the Vigo configuration, plus `config`, which prints the effective configuration. `--config
PATH` (or `VIGO_CONFIG`) names the YAML file."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys

import orjson

from processor.config import (
    ConfigError,
    Settings,
    effective_config,
    load_settings,
    unapplied_warnings,
)
from processor.heap import keep_large_buffers_mapped

CONFIG_USAGE = "usage: vigo-processor config [--config PATH]"


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    config_path, rest = split_config_option(args)
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        sys.exit(f"vigo-processor: {exc}")
    if rest[:1] == ["config"]:
        print_config(settings, rest[1:])
        return
    keep_large_buffers_mapped()  # before the first fetch buffer (processor.heap)
    run_faust(settings, rest)


def split_config_option(args: list[str]) -> tuple[str | None, list[str]]:
    """`--config PATH` / `--config=PATH` anywhere on the line, and the other arguments."""
    config_path = os.environ.get("VIGO_CONFIG")
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--config":
            if i + 1 >= len(args):
                sys.exit("vigo-processor: --config needs a path")
            config_path = args[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            config_path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return config_path, rest


def print_config(settings: Settings, extra: list[str]) -> None:
    """`vigo-processor config`: the effective configuration as JSON, secrets masked.
    Touches no broker, so it answers where the worker cannot start yet."""
    if extra[:1] in (["-h"], ["--help"]):
        print(CONFIG_USAGE)
        return
    if extra:
        sys.exit(f"vigo-processor config: unexpected argument {extra[0]!r}\n{CONFIG_USAGE}")
    doc = effective_config(settings)
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")


def run_faust(settings: Settings, rest: list[str]) -> None:
    """Faust's command line on the app; `worker` creates the topics first."""
    # uvloop where installed (a dependency on Linux): Faust's per-event machinery is mostly
    # asyncio callbacks and futures, which uvloop runs in C. Faust picks the loop when it is
    # first imported; `FAUST_LOOP=aio` keeps asyncio's own loop.
    if importlib.util.find_spec("uvloop") is not None:
        os.environ.setdefault("FAUST_LOOP", "uvloop")
    from processor.app import kafka_client_options
    from processor.topics_admin import TopicSetupError, ensure_topics
    from processor.topology import build_app

    if rest[:1] == ["worker"]:
        for warning in unapplied_warnings(settings):
            print(f"vigo-processor: warning: {warning}", file=sys.stderr)
        try:
            asyncio.run(ensure_topics(settings, kafka_client_options(settings)))
        except TopicSetupError as exc:
            sys.exit(f"vigo-processor: {exc}")
    vigo = build_app(settings)
    sys.argv = ["vigo-processor", *rest]
    vigo.app.main()


if __name__ == "__main__":
    main()
