"""`vigo-processor`: Faust's own command line (worker, tables, ...) on an app built from
the Vigo configuration. `--config PATH` (or `VIGO_CONFIG`) names the YAML file."""

from __future__ import annotations

import asyncio
import os
import sys

from vigo.processor.config import ConfigError, load_settings


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
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
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        sys.exit(f"vigo-processor: {exc}")

    from vigo.processor.app import kafka_client_options
    from vigo.processor.topics_admin import TopicSetupError, ensure_topics
    from vigo.processor.topology import build_app

    if rest[:1] == ["worker"]:
        try:
            asyncio.run(ensure_topics(settings, kafka_client_options(settings)))
        except TopicSetupError as exc:
            sys.exit(f"vigo-processor: {exc}")
    vigo = build_app(settings)
    sys.argv = ["vigo-processor", *rest]
    vigo.app.main()


if __name__ == "__main__":
    main()
