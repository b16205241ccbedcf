"""aioprometheus's Counter and Histogram with a fast path for a label set seen before.

Each ``add`` / ``observe`` of aioprometheus checks every label name against a regex and
serialises the label dict to sorted JSON to find its series: ~5 µs, several times per job
in every service. The label sets are bounded by design (``fleet_shared.labels``), so each
collector here remembers, per label set (its items, in the caller's order), the series'
key (Counter) or its aggregator (Histogram) after the first time: the same series, the same
rendering, a tuple and a dict look-up per call instead.
"""

from __future__ import annotations

from typing import Any

from aioprometheus.collectors import Counter, Histogram


class FastCounter(Counter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keys: dict[tuple[tuple[str, str], ...], Any] = {}

    def add(self, labels: dict[str, str], value: float) -> None:  # type: ignore[override]
        items = tuple(labels.items())
        key = self._keys.get(items)
        if key is None:
            super().add(labels, value)  # checks the labels, creates the series
            self._keys[items] = self.values.__keytransform__(labels)  # type: ignore[no-untyped-call]
            return
        if value < 0:
            raise ValueError("Counters can't decrease")
        store = self.values.store
        store[key] = store[key] + value

    def inc(self, labels: dict[str, str]) -> None:
        self.add(labels, 1)


class FastHistogram(Histogram):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._series: dict[tuple[tuple[str, str], ...], Any] = {}

    def add(self, labels: dict[str, str], value: float) -> None:  # type: ignore[override]
        items = tuple(labels.items())
        series = self._series.get(items)
        if series is None:
            super().add(labels, value)  # checks the labels and the value, creates the series
            self._series[items] = self.get_value(labels)
            return
        if type(value) not in (float, int):
            raise TypeError("Histogram only works with digits (int, float)")
        series.observe(float(value))

    observe = add  # type: ignore[assignment]
