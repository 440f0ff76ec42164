"""Health checks of the project's containers (docker-compose.yml runs them as `healthcheck`).

    python /opt/aq-docker/healthcheck.py http URL     # URL answers 2xx
    python /opt/aq-docker/healthcheck.py kafka-topic  # the broker answers and AQ_KAFKA_TOPIC exists

Exit status 0 = healthy, 1 = not (with one line on stderr). The Kafka check reads the same
settings as the project (aqi.core.config) and uses the project's own topic helper.
"""

from __future__ import annotations

import sys
import urllib.request


def check_http(url: str) -> None:
    with urllib.request.urlopen(url, timeout=5) as response:
        if not 200 <= response.status < 300:
            raise RuntimeError(f"{url} answered {response.status}")


def check_kafka_topic() -> None:
    from aqi.core.config import load_settings
    from aqi.core.topics import topic_partitions

    settings = load_settings(dotenv=None)
    if settings.kafka_bootstrap_servers is None:
        raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set")
    if not topic_partitions(settings.kafka_bootstrap_servers, settings.kafka_topic):
        raise RuntimeError(f"topic {settings.kafka_topic!r} does not exist yet")


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 2 and argv[0] == "http":
            check_http(argv[1])
        elif argv == ["kafka-topic"]:
            check_kafka_topic()
        else:
            print("usage: healthcheck.py http URL | kafka-topic", file=sys.stderr)
            return 2
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
