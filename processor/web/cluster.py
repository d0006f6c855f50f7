"""Who owns what across the workers, and the client that asks the others.

Each worker holds only its own partitions, so the views answer some requests from
another worker; this module knows, from the assignment metadata every member receives,
which worker that is (and where Kafka's default partitioner puts an envoy's key), and
sends the forwarded request, marked with `X-Vigo-Forwarded` and the API's token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import faust
from aiokafka.partitioner import DefaultPartitioner
from yarl import URL

#: Marks a request forwarded by another worker; its value is the sender's URL.
FORWARDED = "X-Vigo-Forwarded"
PEER_TIMEOUT_S = 5.0


def envoy_partition(envoy_id: str, partitions: int) -> int:
    """Where Kafka's default partitioner (murmur2, Java client and aiokafka) puts the key."""
    ids = list(range(partitions))
    return int(DefaultPartitioner()(envoy_id.encode("utf-8"), ids, ids))


class PeerError(Exception):
    """Another worker could not be asked."""


@dataclass(frozen=True)
class Cluster:
    """Who owns what, from the assignment metadata every member receives, and a client
    to ask the others."""

    app: faust.App
    fleet_topic: str
    envoy_topic: str
    partitions: int
    #: The API's bearer token (SPEC 10.7): forwarded requests carry it.
    token: str | None = None

    @property
    def self_url(self) -> str:
        return str(self.app.conf.canonical_url)

    def _distribution(self) -> Mapping[str, Mapping[str, list[int]]]:
        """Member URL -> its active partitions of every non-changelog topic."""
        metadata: Mapping[str, Mapping[str, list[int]]] = self.app.router.external_topics_metadata()
        return metadata

    def members(self) -> list[str]:
        return sorted(self._distribution())

    def owner_of(self, topic: str, partition: int) -> str | None:
        for url, topics in self._distribution().items():
            if partition in topics.get(topic, ()):
                return url
        return None

    def fleet_owner(self) -> str | None:
        return self.owner_of(self.fleet_topic, 0)

    def envoy_owner(self, envoy_id: str) -> str | None:
        return self.owner_of(self.envoy_topic, envoy_partition(envoy_id, self.partitions))

    def _headers(self) -> dict[str, str]:
        headers = {FORWARDED: self.self_url}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def get(self, base_url: str, path_qs: str) -> tuple[int, bytes]:
        """GET from another worker, marked as forwarded."""
        url = URL(base_url.rstrip("/") + path_qs, encoded=True)
        try:
            async with self.app.http_client.get(
                url,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S),
            ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise PeerError(f"worker {base_url} did not answer: {reason}") from exc
