"""The helpers every benchmark report is built with: the median round and the machine."""

from __future__ import annotations

import os

from benchmarks.common import finish_machine, machine, median_round


def test_the_median_round_is_a_real_round_not_an_average() -> None:
    rounds = [{"s": 3.0}, {"s": 1.0}, {"s": 2.0}, {"s": 9.0}]
    assert median_round(rounds, key=lambda r: r["s"]) == {"s": 2.0}  # the lower middle one
    assert median_round(rounds[:3], key=lambda r: r["s"]) == {"s": 2.0}


def test_a_report_names_its_machine_and_the_load_before_and_after() -> None:
    info = machine()
    assert info["cores"] == len(os.sched_getaffinity(0))
    assert info["memory_gb"] > 0
    assert info["calibration_loop_ms"] > 0
    assert len(info["load_avg_start"]) == 3
    assert "load_avg_end" not in info
    finished = finish_machine(info)
    assert finished is info
    assert len(info["load_avg_end"]) == 3
    assert all(x >= 0 for x in info["load_avg_start"] + info["load_avg_end"])
