"""The PromQL name extraction the dashboard and rule checks rely on."""

from __future__ import annotations

import pytest

from tests.promql import metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job="omnistitch-worker"} == 0', {"up"}),
        (
            "sum by (group, topic) "
            "(max by (group, topic, partition) (omnistitch_consumer_lag_records))",
            {"omnistitch_consumer_lag_records"},
        ),
        (
            "histogram_quantile(0.99, "
            'sum by (le) (rate(x_seconds_bucket{channel=~"web|app"}[5m])))',
            {"x_seconds_bucket"},
        ),
        (
            "sum by (reason) (rate(a_total[10m])) "
            "/ ignoring (reason) group_left sum(rate(b_total[10m])) > 1e-2",
            {"a_total", "b_total"},
        ),
        (
            "rate(a_total[$__rate_interval]) and rate(b_total[1h] offset 1d) > 0",
            {"a_total", "b_total"},
        ),
        (
            "deriv(omnistitch:consumer_lag_records:sum[10m]) > 0",
            {"omnistitch:consumer_lag_records:sum"},
        ),
        ('label_replace(a, "dst", "$1", "src", "(.*)") unless on (x) b', {"a", "b"}),
        ("max_over_time(a[5m:30s]) > bool 3", {"a"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
