"""The Faust app's settings, from the Vigo configuration: brokers and credentials, the
store, batching and producer tuning, the web server. What runs on it is in `topology`."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import faust

from processor.config import Settings
from processor.faust_compat import ChangelogTable, PromptTableManager, install_fetch_wait
from processor.web.security import security_middleware
from processor.web.views import ROUTE_PATHS
from topics.codec import DEADLETTER_MAX_RECORD_BYTES

#: Records the envoy agent takes at most at once (fetches are merged up to this).
BATCH_MAX = 4000


def faust_app(settings: Settings) -> faust.App:
    app = _faust_app(settings)
    # Faust's 1.5 s fetch wait stalls every partition of a broker behind one quiet one.
    install_fetch_wait(app)
    return app


def _faust_app(settings: Settings) -> faust.App:
    return faust.App(
        f"{settings.kafka.topic_prefix}compliance",
        broker=[f"kafka://{host.strip()}" for host in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="rocksdb://" if settings.processor.store == "rocksdb" else "memory://",
        datadir=str(settings.processor.data_dir),
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        table_standby_replicas=settings.processor.standby_replicas,
        broker_session_timeout=settings.processor.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.processor.session_timeout_s / 6),
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_host=settings.web.host,
        web_port=settings.web.port,
        canonical_url=_advertised_url(settings),
        web_in_thread=False,
        # SPEC 11.4: none of Faust's own web apps (table contents, cluster topology,
        # sensor statistics, service graph) is served; what no setting covers (its `/`
        # index, APP_WEB_* overrides) the middleware refuses: `processor.web.security`.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
        # The token before any `/api/*` path, and the pages' security headers.
        web_application_options={
            "middlewares": [security_middleware(settings.web.auth_token, ROUTE_PATHS)]
        },
        autodiscover=False,
        # Room for the largest dead letter too: a too_large record's dead letter carries
        # up to 512 KiB of it (base64'd), even when max_event_bytes is small.
        producer_max_request_size=max(
            2 * settings.processor.max_event_bytes, DEADLETTER_MAX_RECORD_BYTES
        ),
        stream_buffer_maxsize=4000,
        # A 2 ms linger: the records one batch sends (status changes, dead letters,
        # alerts through Faust's producer) share produce requests, and a status change
        # waits at most 2 ms more for it.
        producer_linger_ms=2,
        producer_max_batch_size=512_000,
        # Records turned into Faust messages at once per fetch. With 2,000, working off a
        # backlog left the interpreter's small-object arenas twice as large as what stays
        # alive (each envoy's key and index entries pin arenas the fetched records filled):
        # 500 took RSS per envoy from 3,313 to 2,257 bytes at the same throughput within
        # this machine's noise (benchmarks/bench_memory.py --heap, bench_throughput.py).
        broker_max_poll_records=500,
        TableManager=PromptTableManager,
        Table=ChangelogTable,
    )


def kafka_client_options(settings: Settings) -> dict[str, object]:
    """The same security settings for the admin client as for Faust's own clients."""
    kafka = settings.kafka
    if kafka.security_protocol == "PLAINTEXT":
        return {}
    options: dict[str, object] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None
        )
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password_file is not None:
            options["sasl_plain_password"] = kafka.sasl_password_file.read_text().strip()
    return options


def _advertised_url(settings: Settings) -> str:
    """How the other workers reach this one's web server (requests are forwarded to the
    owner of the data): a wildcard address is no address, so advertise the host name,
    as Faust does by default. Faust's NODE_CANONICAL_URL environment variable overrides."""
    host = settings.web.host
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"http://{host}:{settings.web.port}"


def _credentials(settings: Settings) -> Any:
    kafka = settings.kafka
    if kafka.security_protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    password = ""
    if kafka.sasl_password_file is not None:
        password = kafka.sasl_password_file.read_text(encoding="utf-8").strip()
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=password,
        mechanism=kafka.sasl_mechanism,
        ssl_context=context if kafka.security_protocol == "SASL_SSL" else None,
    )
