"""Benchmark the simulator's produce rate into the embedded broker (events/s).

Run with `make bench`. Uses a throw-away AQ_HOME and free ports; the numbers go into
docs/benchmarks.md with the machine and date.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from pathlib import Path

from aqi.config import load_settings
from aqi.connections import kafka_bootstrap_servers
from aqi.services import services_down, services_up
from aqi.topics import end_offsets
from ingestion.producer import EventProducer
from ingestion.progress import Progress
from ingestion.replay import send_paced
from ingestion.simulator import SimulationConfig, simulate

CONFIG = SimulationConfig(locations=20, days=7, seed=1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="aq-bench-"))
    env = {
        "AQ_HOME": str(home),
        "AQ_PG_PORT": str(_free_port()),
        "AQ_KAFKA_PORT": str(_free_port()),
    }
    settings = load_settings(env, dotenv=None)
    services_up(settings, echo=lambda line: None)
    try:
        bootstrap = kafka_bootstrap_servers(settings)
        start = time.perf_counter()
        generated = sum(1 for _ in simulate(CONFIG))
        generate_s = time.perf_counter() - start

        with (
            EventProducer(bootstrap, "bench.simulate", partitions=3) as producer,
            open("/dev/null", "w") as sink,
            Progress("bench", stream=sink) as progress,
        ):
            start = time.perf_counter()
            sent = send_paced(simulate(CONFIG), producer, progress)
            produce_s = time.perf_counter() - start
        assert sent == generated == sum(end_offsets(bootstrap, "bench.simulate").values())
    finally:
        services_down(settings, echo=lambda line: None)
    print(f"simulator: {CONFIG}", file=sys.stderr)
    print("| measurement | result |\n|---|---|")
    print(f"| simulator alone ({generated:,} events) | {generated / generate_s:,.0f} events/s |")
    print(
        f"| simulator -> embedded broker (acks=all, idempotent, gzip, batches of 2,000) "
        f"| {sent / produce_s:,.0f} events/s |"
    )


if __name__ == "__main__":
    main()
