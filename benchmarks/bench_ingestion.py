"""Benchmark the simulator's produce rate into the embedded broker (events/s).

Run with `make bench`. Uses a throw-away AQ_HOME and free ports; the numbers go into
docs/benchmarks.md with the machine and date.
"""

from __future__ import annotations

import sys
import time

from _services import temporary_services

from aqi.connections import kafka_bootstrap_servers
from aqi.topics import end_offsets
from ingestion.producer import EventProducer
from ingestion.progress import Progress
from ingestion.replay import send_paced
from ingestion.simulator import SimulationConfig, simulate

CONFIG = SimulationConfig(locations=20, days=7, seed=1)


def main() -> None:
    with temporary_services() as settings:
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
    print(f"simulator: {CONFIG}", file=sys.stderr)
    print("| measurement | result |\n|---|---|")
    print(f"| simulator alone ({generated:,} events) | {generated / generate_s:,.0f} events/s |")
    print(
        f"| simulator -> embedded broker (acks=all, idempotent, gzip, batches of 2,000) "
        f"| {sent / produce_s:,.0f} events/s |"
    )


if __name__ == "__main__":
    main()
