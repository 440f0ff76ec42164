"""An independent implementation of the numbers the warehouse computes, in plain Python/pandas.

Written from the EPA Technical Assistance Document and shared/reference/README.md, not from
the dbt SQL, so the tests can check one against the other: AQI sub-index with truncation,
NowCast, and the gold tables (15-minute PM2.5, local-day means, 30-day exceedances, latest).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

import pandas as pd

# EPA 2024: (C_lo, C_hi, I_lo, I_hi); the Hazardous rows end at 325.4 / 604 -> 500
BREAKPOINTS = {
    "pm25": [("0.0", "9.0", 0, 50), ("9.1", "35.4", 51, 100), ("35.5", "55.4", 101, 150),
             ("55.5", "125.4", 151, 200), ("125.5", "225.4", 201, 300), ("225.5", "325.4", 301, 500)],
    "pm10": [("0", "54", 0, 50), ("55", "154", 51, 100), ("155", "254", 101, 150),
             ("255", "354", 151, 200), ("355", "424", 201, 300), ("425", "604", 301, 500)],
}  # fmt: skip
DECIMALS = {"pm25": Decimal("0.1"), "pm10": Decimal(1)}
CATEGORIES = [(50, "Good"), (100, "Moderate"), (150, "Unhealthy for Sensitive Groups"),
              (200, "Unhealthy"), (300, "Very Unhealthy"), (500, "Hazardous")]  # fmt: skip
WHO = {"pm25": 15, "pm10": 45}
# the physical maxima are configuration (the seed), not logic: read them from the seed file
_LIMITS = pd.read_csv(
    Path(__file__).resolve().parents[1] / "dbt_project" / "seeds" / "pollutant_limits.csv"
)
PHYSICAL_MAX = {(r.parameter, r.units): float(r.physical_max) for r in _LIMITS.itertuples()}
US = {"pm25": 35, "pm10": 150}


def exact(value: float) -> Fraction:
    """A reading as the warehouse averages it: the float8 cast to numeric keeps its digits."""
    return Fraction(Decimal(repr(float(value))))


def exact_mean(values: Iterable[Fraction]) -> Fraction:
    """The mean without rounding: a float mean of 9.0 can come out 8.999999999999998, which
    truncates to 8.9 and moves the AQI a point (the warehouse averages in numeric)."""
    values = list(values)
    return sum(values, Fraction(0)) / len(values)


def aqi(concentration: float | Fraction | None, pollutant: str) -> int | None:
    """EPA sub-index: truncate, interpolate, round half up; 500 above the table.

    A ``Fraction`` is truncated exactly; a float by its shortest decimal form.
    """
    if concentration is None or pd.isna(concentration) or concentration < 0:
        return None
    if isinstance(concentration, Fraction):
        step = DECIMALS[pollutant]
        c = math.floor(concentration / Fraction(step)) * step
    else:
        c = Decimal(repr(float(concentration))).quantize(DECIMALS[pollutant], rounding=ROUND_DOWN)
    for lo, hi, i_lo, i_hi in BREAKPOINTS[pollutant]:
        lo_d, hi_d = Decimal(lo), Decimal(hi)
        if lo_d <= c <= hi_d:
            value = Decimal(i_hi - i_lo) / (hi_d - lo_d) * (c - lo_d) + i_lo
            return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return 500


def category(index: int | None) -> str | None:
    if index is None:
        return None
    return next(name for top, name in CATEGORIES if index <= top)


def nowcast(hours: list[float | None]) -> float | None:
    """hours[0] = newest hourly mean; None for a missing hour."""
    if sum(h is not None for h in hours[:3]) < 2:
        return None
    values = [h for h in hours if h is not None]
    high, low = max(values), min(values)
    # exact in, exact out: Fractions stay Fractions (the warehouse computes it in numeric)
    w = max(1 - (high - low) / high, Fraction(1, 2)) if high > 0 else 1
    pairs = [(w**i, h) for i, h in enumerate(hours) if h is not None]
    return sum(weight * h for weight, h in pairs) / sum(weight for weight, _ in pairs)


def valid_readings(events: list[dict]) -> pd.DataFrame:
    """Latest ingested version per (sensor, period end), minus rejected readings.

    ``events`` in the order they were loaded into raw.
    """
    frame = pd.DataFrame(events)
    frame["period_start"] = pd.to_datetime(frame["period_start"], utc=True)
    frame["period_end"] = pd.to_datetime(frame["period_end"], utc=True)
    frame["ingested_at"] = pd.to_datetime(frame["ingested_at"], utc=True)
    # ties on ingested_at go to the event loaded last (the warehouse: the higher Kafka offset)
    frame["load_order"] = range(len(frame))
    frame = (
        frame.sort_values(["ingested_at", "load_order"])
        .groupby(["sensor_id", "period_end"])
        .tail(1)
    )
    value = frame["value"]
    limit = pd.Series(
        [PHYSICAL_MAX.get((p, u)) for p, u in zip(frame["parameter"], frame["units"], strict=True)],
        index=frame.index, dtype="float64",
    )  # fmt: skip
    bad = value.isna() | (value <= -999) | (value < 0) | frame["flagged"].astype(bool)
    bad |= limit.notna() & (value > limit)
    return frame[~bad].copy()


def pm25_15min(valid: pd.DataFrame) -> pd.DataFrame:
    pm = valid[(valid.parameter == "pm25") & (valid.units == "µg/m³")]
    rows = []
    for r in pm.itertuples():
        window = r.period_start.floor("15min")
        while window < r.period_end:
            rows.append((r.location_id, window, r.sensor_id, r.value))
            window += pd.Timedelta(minutes=15)
    frame = pd.DataFrame(rows, columns=["location_id", "window_start", "sensor_id", "value"])
    per_sensor = frame.groupby(["location_id", "window_start", "sensor_id"]).value.agg(
        ["mean", "size"]
    )
    out = per_sensor.groupby(level=[0, 1]).agg(
        pm25_avg=("mean", "mean"), sensor_count=("mean", "size"), reading_count=("size", "sum")
    )
    return out.reset_index()


def daily_avg(valid: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for tz, group in valid.groupby("timezone"):
        local = (
            (group.period_end - pd.Timedelta(microseconds=1)).dt.tz_convert(tz).dt.tz_localize(None)
        )
        frames.append(group.assign(local_hour=local.dt.floor("h")))
    data = pd.concat(frames)
    data["value"] = data.value.map(exact)
    hourly = (
        data.groupby(["location_id", "parameter", "units", "local_hour"])
        .value.agg(exact_mean)
        .reset_index()
    )
    hourly["local_date"] = hourly.local_hour.dt.date
    daily = hourly.groupby(["location_id", "parameter", "units", "local_date"]).value.agg(
        [exact_mean, "size"]
    )
    daily = daily.reset_index().rename(columns={"exact_mean": "exact_avg", "size": "hours_covered"})
    # gold stores the mean as double precision: the exceedance counts compare that
    daily["avg_value"] = daily.exact_avg.map(float)
    daily["is_complete"] = daily.hours_covered >= 18
    daily["aqi"] = [
        aqi(row.exact_avg, row.parameter)
        if row.is_complete and row.parameter in BREAKPOINTS and row.units == "µg/m³"
        else None
        for row in daily.itertuples()
    ]
    daily["aqi_category"] = daily.aqi.map(lambda a: category(None if pd.isna(a) else int(a)))
    return daily


def exceedance_30d(daily: pd.DataFrame) -> pd.DataFrame:
    pm = daily[daily.parameter.isin(["pm25", "pm10"]) & (daily.units == "µg/m³")]
    rows = []
    for (location, parameter), group in pm.groupby(["location_id", "parameter"]):
        for day in group.local_date:
            window = group[
                (group.local_date <= day) & (group.local_date > day - pd.Timedelta(days=30))
            ]
            complete = window[window.is_complete]
            rows.append((location, parameter, day, len(complete),
                         int((complete.avg_value > WHO[parameter]).sum()),
                         int((complete.avg_value > US[parameter]).sum())))  # fmt: skip
    return pd.DataFrame(rows, columns=["location_id", "parameter", "local_date", "complete_days",
                                       "days_over_who", "days_over_us"])  # fmt: skip


def latest(valid: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (location, parameter), group in valid.groupby(["location_id", "parameter"]):
        newest = group.sort_values(["period_end", "sensor_id"], ascending=[False, True]).iloc[0]
        index = None
        if parameter in BREAKPOINTS and newest.units == "µg/m³":
            same = group[group.units == newest.units]
            hour = (same.period_end - pd.Timedelta(microseconds=1)).dt.floor("h")
            means = same.value.map(exact).groupby(hour).agg(exact_mean)
            top = (newest.period_end - pd.Timedelta(microseconds=1)).floor("h")
            hours = [means.get(top - pd.Timedelta(hours=i)) for i in range(12)]
            index = aqi(nowcast(hours), parameter)
        rows.append((location, parameter, newest.sensor_id, newest.value, newest.period_end, index))
    return pd.DataFrame(rows, columns=["location_id", "parameter", "sensor_id", "value",
                                       "measured_at", "aqi"])  # fmt: skip
