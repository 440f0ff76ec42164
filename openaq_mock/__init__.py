"""Test doubles of OpenAQ: a virtual clock and a deterministic world of sensors.

- :class:`openaq_mock.clock.VirtualClock` - time that moves when someone sleeps.
- :class:`openaq_mock.world.World` / :class:`openaq_mock.world.WorldProfile` - tens of
  thousands of locations whose readings are published on a schedule, served by
  :class:`ingestion.mock_server.MockOpenAQ` (``world=``).
"""

from openaq_mock.clock import VirtualClock
from openaq_mock.world import SensorInfo, World, WorldProfile

__all__ = ["SensorInfo", "VirtualClock", "World", "WorldProfile"]
