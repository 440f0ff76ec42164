"""Test doubles of OpenAQ, kept apart from the product: the mock API, the mock S3 archive,
a virtual clock and a deterministic world of sensors.

- :class:`openaq_mock.api.MockOpenAQ` - the OpenAQ v3 API on 127.0.0.1, answering from the
  recorded responses (``aqi mock-api``, ``python -m openaq_mock.api``).
- :class:`openaq_mock.archive.MockArchive` - the OpenAQ S3 archive's files over HTTP.
- :class:`openaq_mock.clock.VirtualClock` - time that moves when someone sleeps.
- :class:`openaq_mock.world.World` / :class:`openaq_mock.world.WorldProfile` - tens of
  thousands of locations whose readings are published on a schedule, served by
  :class:`openaq_mock.api.MockOpenAQ` (``world=``).
"""

from openaq_mock.clock import VirtualClock
from openaq_mock.world import SensorInfo, World, WorldProfile

__all__ = ["SensorInfo", "VirtualClock", "World", "WorldProfile"]
