"""The fast-path collectors render exactly what aioprometheus's own do for the same calls."""

from __future__ import annotations

import pytest
from aioprometheus.collectors import Counter, Histogram, Registry
from aioprometheus.renderer import render

from fleet_shared.collectors import FastCounter, FastHistogram


def rendered(counter_type: type, histogram_type: type) -> bytes:
    registry = Registry()
    counter = counter_type("c_total", "c", registry=registry)
    histogram = histogram_type("h_seconds", "h", registry=registry, buckets=[0.1, 1.0])
    for i in range(5):
        counter.inc({"model": "a", "outcome": "success"})
        counter.add({"outcome": "success", "model": "a"}, 0.5)  # the same series, other order
        counter.add({"model": "b", "outcome": "failure"}, i)
        histogram.observe({"model": "a"}, 0.05 * i)
        histogram.add({"model": "b"}, 2)
    body, _ = render(registry, ["text/plain"])
    return body


def test_the_same_calls_render_the_same_series():
    fast = rendered(FastCounter, FastHistogram)
    assert fast == rendered(Counter, Histogram)
    assert b'c_total{model="a",outcome="success"} 7.5' in fast
    assert b'h_seconds_count{model="a"} 5' in fast


def test_bad_values_are_refused_on_the_fast_path_too():
    registry = Registry()
    counter = FastCounter("c_total", "c", registry=registry)
    histogram = FastHistogram("h", "h", registry=registry)
    counter.inc({"m": "a"})
    histogram.observe({"m": "a"}, 1)
    with pytest.raises(ValueError):
        counter.add({"m": "a"}, -1)
    with pytest.raises(TypeError):
        histogram.observe({"m": "a"}, "1")  # type: ignore[arg-type]
