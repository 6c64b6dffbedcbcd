"""edge bench's report: table and goal lines from canned results (the benchmark itself is not a test)."""

from __future__ import annotations

import io

from edge import bench


def _run(name, thr, fps, e2e, **extra):
    stages = {s: {"p50_ms": 1.0, "p99_ms": 2.0} for s in bench.STAGES if not (name.startswith("up") and s == "gate")}
    r = {"pipeline": name, "threads": thr, "fps": fps, "e2e": {"p50_ms": e2e, "p99_ms": e2e * 1.2},
         "cpu_ms_per_frame": e2e, "stages": stages, "peak_rss_mb": 90.0}
    r.update(extra)
    return r


def test_report_has_ratio_goals_and_errors():
    results = {
        "machine": {"date": "d", "cpu": "cpu", "cores": 2, "python": "3", "numpy": "2", "opencv": "5", "litert": "2"},
        "source_desc": "clip", "load_before": (0.5, 0, 0), "load_after": (0.7, 0, 0),
        "runs": [
            _run("edge float32", 1, 200.0, 5.0, variant="float32", heap_net_bytes_per_frame=6.0,
                 blocks_net_per_frame=0.0, heap_peak_kb=300.0,
                 verdict={"kind": "PASS", "frames_seen": 3, "elapsed_ms_on_30fps_timeline": 67}),
            _run("upstream (torch)", 1, 50.0, 20.0),
            _run("upstream shipped", 1, 20.0, 50.0),
            {"pipeline": "edge int8", "threads": 1, "error": "ModelMissingError: build it"},
        ],
    }
    results["summary"] = bench.summarise(results)
    out = io.StringIO()
    bench.render(results, out)
    text = out.getvalue()
    assert "200.0 fps vs upstream (torch) 50.0 fps -> 4.0x (goal >= 6x: NOT met)" in text
    assert "200.0 fps vs upstream shipped 20.0 fps -> 10.0x (goal >= 6x: met)" in text
    assert "upstream: rebuilt from the facts" in text  # no --upstream-src checkout in this run
    assert "p50 5.00 ms, p99 6.00 ms -> met" in text
    assert "PASS after 3 frames = 67 ms of camera time + 5.0 ms processing -> met" in text
    assert "ERROR ModelMissingError: build it" in text
    assert "busy" not in text


def test_best_of_repeats_keeps_the_fastest():
    assert bench._best([{"fps": 1.0}, {"fps": 3.0}, {"error": "x"}]) == {"fps": 3.0}
    assert bench._best([{"error": "a"}, {"error": "b"}]) == {"error": "b"}
