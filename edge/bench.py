"""``edge bench``: the whole pipeline stage by stage, side by side with upstream Silent-Face.

A benchmark, not a test: it prints numbers and compares them with the goals
(per frame <= 8 ms on one core at 640x480, >= 6x upstream's frames/s,
0 heap growth per frame, verdict <= 400 ms after the first face frame at 30 fps).

What it runs, on the same frames:
- the bench clip: 640x480 MJPG video (like a USB camera's stream) made from
  the development images in ../shared/fas-dev (letterboxed, each held for a
  few frames), written to a temporary folder and deleted afterwards; or any
  camera spec given with --source;
- edge: the pipeline's own stage objects (edge.assemble.build_pipeline):
  camera read (capture+decode), detector, quality gate, liveness ensemble,
  decision; for each model variant (float32, int8) and thread count (1, 2),
  each in a fresh process so peak RSS is per configuration; with
  ``--landmarks`` also the active mode's landmark stage (Face Landmarker v2
  mesh + blendshapes + pose, float32) on every frame with a face, its pose
  fed to the gate;
- upstream: scripts/bench_upstream.py in the benchmark's own venv (PyTorch,
  OpenCV 4), twice: models held in memory (favours upstream) and as its code
  ships (weights reloaded on every predict()), when that venv exists (--upstream-python, default
  $EDGE_BENCH_UPSTREAM_PYTHON, else .venv-bench/bin/python in the repository, made by scripts/bench-env.sh).

Stage times are wall-clock per frame (perf_counter), reported as p50/p99.
"crop" is measured separately on the bench's own buffers; the liveness column
includes the models' own crops (that is where the runtime does them), and the
end-to-end figure is the loop's real work: read + detect + gate + liveness + decision.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
UPSTREAM_SCRIPT = REPO / "scripts" / "bench_upstream.py"
UPSTREAM_HELD = "upstream (torch)"  # upstream's pipeline with its models loaded once: favours upstream
UPSTREAM_SHIPPED = "upstream shipped"  # as its code runs: predict() reloads the weights on every call
UPSTREAM_CODE = "upstream own code"  # upstream's own checkout (--upstream-src), when one is available locally
# Project-relative and git-ignored, made by scripts/bench-env.sh; $EDGE_BENCH_UPSTREAM_PYTHON points elsewhere.
DEFAULT_UPSTREAM_PYTHON = str(REPO / ".venv-bench" / "bin" / "python")
W, H, FPS = 640, 480, 30.0
STAGES = ("capture", "detect", "landmarks", "gate", "crop", "liveness", "decision")
GOAL_FRAME_MS = 8.0
GOAL_RATIO = 6.0
GOAL_VERDICT_MS = 400.0


# --- the bench clip --------------------------------------------------------------------------------
def _letterbox(img: np.ndarray) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    r = min(W / w, H / h)
    nw, nh = max(1, int(round(w * r))), max(1, int(round(h * r)))
    out = np.zeros((H, W, 3), np.uint8)
    x, y = (W - nw) // 2, (H - nh) // 2
    out[y : y + nh, x : x + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def source_images(limit: int = 40) -> list[Path]:
    """Development images: Silent-Face's samples first, then NUAA live/spoof alternating."""
    base = SHARED / "fas-dev"
    files = sorted((base / "silentface").glob("*/*.jpg"))
    live = sorted((base / "nuaa" / "live").glob("*.jpg"))[: limit // 2]
    spoof = sorted((base / "nuaa" / "spoof").glob("*.jpg"))[: limit // 2]
    for a, b in zip(live, spoof):
        files += [a, b]
    return files[:limit]


def write_clip(path: Path, images: list[Path], hold: int, total: int) -> int:
    """MJPG .avi at 30 fps, each image held ``hold`` frames, ``total`` frames in all (cycling)."""
    import cv2

    # persistence-ok: benchmark input from the development set, in a temp dir deleted after the run
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))  # persistence-ok
    if not writer.isOpened():
        raise RuntimeError("this OpenCV cannot write MJPG .avi")
    frames = [_letterbox(cv2.imread(str(p), cv2.IMREAD_COLOR)) for p in images]
    n = 0
    try:
        while n < total:
            for f in frames:
                for _ in range(hold):
                    writer.write(f)
                    n += 1
                    if n >= total:
                        return n
        return n
    finally:
        writer.release()
        for f in frames:
            f.fill(0)


# --- one edge configuration (runs in its own process) ---------------------------------------------
def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q)) if values else float("nan")


def _build(variant: str, threads: int, every_n: int | None, schedule: str | None, mode: str | None = None):
    """The pipeline as `edge run` builds it from the default config, with the bench's overrides."""
    from edge import config as config_mod
    from edge.assemble import build_pipeline

    models: dict[str, Any] = {"variant": variant, "threads": threads}
    if schedule is not None:
        models["liveness_schedule"] = schedule
    overrides: dict[str, Any] = {"models": models}
    if every_n is not None:
        overrides["detector"] = {"every_n_frames": every_n}
    if mode is not None:
        overrides["liveness"] = {"mode": mode}
    cfg = config_mod.load(None, overrides=overrides)
    return build_pipeline(cfg), cfg


def _crop_scales(liveness: Any) -> list[float]:
    models = getattr(liveness, "_models", ())
    return [float(m.spec.crop_scale) for m in models] or [2.7, 4.0]


def run_worker(args: argparse.Namespace) -> dict:
    from edge.camera import open_camera
    from edge.liveness.crop import crop_face

    t_load = time.perf_counter()
    from edge.quality import count_faces

    pipeline, cfg = _build(args.variant, args.threads, args.every_n, args.liveness_schedule, getattr(args, "mode", None))
    every_n = cfg.detector.every_n_frames
    load_s = time.perf_counter() - t_load
    liveness, gate, decision = pipeline.liveness, pipeline.gate, pipeline.decision
    scales = _crop_scales(liveness)
    crop_bufs = [np.zeros((80, 80, 3), np.uint8) for _ in scales]
    # Active modes: the pipeline's own landmark stage on the one counted face, and the challenge
    # engine in the decision's place (a fixed order; restarted whenever it decides).
    active = pipeline.mode != "passive"
    mesh = pipeline.landmarks if active else None
    challenge = pipeline.challenge if active else None
    order = ("blink", "turn_left")
    gate_cfg = pipeline._gate_config
    camera = open_camera(args.source)
    times = {k: [] for k in STAGES}
    e2e: list[float] = []
    votes = faces_seen = 0
    perf = time.perf_counter

    def frame_step(record: bool) -> None:
        nonlocal votes, faces_seen
        t0 = perf()
        frame = camera.read(2.0)
        t1 = perf()
        faces = pipeline._faces(frame.image, frame.index)  # the pipeline's own every-n-th-frame rule
        t2 = perf()
        lm = None
        n_faces = len(faces)
        if mesh is not None:
            main, n_faces = count_faces(faces, gate_cfg)
            if main is not None and n_faces == 1:
                lm = mesh.estimate(frame.image, main)
        t_lm = perf()
        lm_s = t_lm - t2
        g = gate.assess(frame.image, faces, landmarks=lm)
        t3 = perf()
        score = None
        c_s = 0.0
        if g.ok:
            for s, buf in zip(scales, crop_bufs):
                crop_face(frame.image, g.face, s, buf)
            t_c = perf()
            c_s = t_c - t3
            score = liveness.score(frame.image, g.face).live
            t4 = perf()
            live_s = t4 - t_c
        else:
            t4 = perf()
            live_s = 0.0
        t_ms = frame.timestamp_ns / 1e6
        if challenge is not None:
            if challenge.on_frame(t_ms, faces=n_faces, landmarks=lm, score=score, reason=g.reason) is not None:
                challenge.start(t_ms, order)
        elif decision.on_frame(t_ms, faces=len(faces), score=score, reason=g.reason) is not None:
            decision.start(t_ms)
        t5 = perf()
        if record:
            faces_seen += bool(faces)
            votes += score is not None
            for k, v in (("capture", t1 - t0), ("detect", t2 - t1), ("landmarks", lm_s), ("gate", t3 - t_lm),
                         ("crop", c_s), ("liveness", live_s), ("decision", t5 - t4)):
                if k != "landmarks" or mesh is not None:
                    times[k].append(v)
            e2e.append((t1 - t0) + (t2 - t1) + (t3 - t2) + live_s + (t5 - t4))

    with camera:
        decision.start(0.0)
        if challenge is not None:
            challenge.start(0.0, order)
        for _ in range(args.warmup):
            frame_step(False)
        cpu0 = time.process_time()
        wall0 = perf()
        for _ in range(args.frames):
            frame_step(True)
        wall = perf() - wall0
        cpu = time.process_time() - cpu0
        # Allocations: a separate pass, tracemalloc slows everything it watches.
        gc.collect()
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        # Growth is the slope between two points in steady state, so what the last frame's
        # results still hold (a few FaceBoxes, about 1 KiB) is not mistaken for a leak.
        n_alloc = max(50, min(args.frames, 200))
        for _ in range(n_alloc):
            frame_step(False)
        gc.collect()
        mid = tracemalloc.get_traced_memory()[0]
        blocks0 = sys.getallocatedblocks()
        for _ in range(n_alloc):
            frame_step(False)
        gc.collect()
        cur, peak = tracemalloc.get_traced_memory()
        blocks1 = sys.getallocatedblocks()
        tracemalloc.stop()
    pipeline_close = getattr(pipeline, "close", None)
    # A still held for 3 s cannot answer a challenge: the active modes' time to verdict for a
    # responding person is simulated by `edge eval --active` instead.
    verdict = verdict_latency(pipeline, args) if not active else None
    if pipeline_close:
        pipeline_close()
    n = len(e2e)
    return {
        "pipeline": f"edge {args.variant}" + (" active" if active else ""),
        "mode": pipeline.mode,
        "variant": args.variant,
        "threads": args.threads,
        "every_n": every_n,
        "liveness_schedule": cfg.models.liveness_schedule,
        "frames": n,
        "faces": faces_seen,
        "votes": votes,
        "load_s": load_s,
        # Like upstream's figure: frames over the loop's wall time, minus the bench-only crop timing.
        "fps": n / (wall - sum(times["crop"])) if n else 0.0,
        "fps_sum_of_stages": n / sum(e2e) if n else 0.0,
        "e2e": {"p50_ms": _pct(e2e, 50), "p99_ms": _pct(e2e, 99), "mean_ms": float(np.mean(e2e) * 1e3)},
        "cpu_ms_per_frame": cpu / n * 1e3,
        "stages": {
            k: {"p50_ms": _pct(v, 50), "p99_ms": _pct(v, 99)} for k, v in times.items() if v or k != "landmarks"
        },
        "heap_net_bytes_per_frame": (cur - mid) / n_alloc,
        "heap_held_bytes": mid - base,  # held after n frames (the last frame's results), not growing
        "heap_peak_kb": (peak - base) / 1024,
        "blocks_net_per_frame": (blocks1 - blocks0) / n_alloc,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "verdict": verdict,
    }


def verdict_latency(pipeline: Any, args: argparse.Namespace) -> dict | None:
    """A live session on the clip of one live face at 30 fps: verdict time after the first face frame.

    The file timeline (frame index / fps) gives the frames a camera would deliver; a live
    camera adds the processing time of the last frame (p50 e2e), reported alongside.
    """
    if not args.live_clip:
        return None
    from edge.camera import open_camera

    outcome = pipeline.run_session(open_camera(args.live_clip))
    v = outcome.verdict
    return {"kind": v.kind.value, "reason": v.reason.name, "elapsed_ms_on_30fps_timeline": v.elapsed_ms,
            "frames_used": v.frames_used, "frames_seen": v.frames_seen}


# --- orchestration ----------------------------------------------------------------------------------
def _machine() -> dict:
    import cv2

    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:
        litert = "?"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "litert": litert,
        "kernel": platform.release(),
    }


def _run_json(cmd: list[str], timeout: float) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def _best(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    return max(ok, key=lambda r: r["fps"]) if ok else runs[-1]


def _fmt(stage: dict | None) -> str:
    if not stage:
        return "-"
    return f"{stage['p50_ms']:.2f}/{stage['p99_ms']:.2f}"


def render(results: dict, out=sys.stdout) -> None:
    m = results["machine"]
    out.write(f"edge bench  {m['date']}  {m['cpu']} ({m['cores']} cores)  Python {m['python']}, "
              f"numpy {m['numpy']}, OpenCV {m['opencv']}, LiteRT {m['litert']}\n")
    out.write(f"frames: {results['source_desc']}\n")
    lb, la = results.get("load_before"), results.get("load_after")
    if lb and la:
        busy = max(lb[0], la[0]) > (m["cores"] or 1)
        out.write(f"load average (1 min) before/after: {lb[0]:.2f}/{la[0]:.2f} on {m['cores']} cores"
                  + ("  -- the machine was busy: figures are pessimistic and noisy\n" if busy else "\n"))
    out.write("stage times p50/p99 ms per frame; crop is part of liveness (measured separately)\n\n")
    head = (f"{'pipeline':<18}{'thr':>3}  " + "".join(f"{s:>13}" for s in STAGES)
            + f"{'e2e':>13}{'fps':>8}{'CPU ms/f':>9}{'heap B/f':>9}{'RSS MB':>8}\n")
    out.write(head)
    out.write("-" * (len(head) - 1) + "\n")
    for r in results["runs"]:
        name = r.get("pipeline", "?")
        if "error" in r:
            out.write(f"{name:<18}{r.get('threads', ''):>3}  ERROR {r['error']}\n")
            continue
        st = r["stages"]
        e2e = r.get("e2e")
        e2e_s = f"{e2e['p50_ms']:.2f}/{e2e['p99_ms']:.2f}" if e2e else "-"
        heap = r.get("heap_net_bytes_per_frame")
        heap_s = f"{heap:.0f}" if heap is not None else "n/a"
        out.write(f"{name[:18]:<18}{r['threads']:>3}  " + "".join(f"{_fmt(st.get(s)):>13}" for s in STAGES)
                  + f"{e2e_s:>13}{r['fps']:>8.1f}{r['cpu_ms_per_frame']:>9.2f}{heap_s:>9}{r['peak_rss_mb']:>8.0f}\n")
    out.write("\n")
    for line in results.get("summary", []):
        out.write(line + "\n")


def summarise(results: dict) -> list[str]:
    lines = []
    runs = [r for r in results["runs"] if "error" not in r]
    up = {(r["pipeline"], r["threads"]): r for r in runs if r.get("pipeline", "").startswith("upstream")}
    for r in runs:
        if r.get("pipeline", "").startswith("edge"):
            for name in (UPSTREAM_HELD, UPSTREAM_SHIPPED, UPSTREAM_CODE):
                ref = up.get((name, r["threads"]))
                if ref:
                    ratio = r["fps"] / ref["fps"]
                    lines.append(f"{r['pipeline']}, {r['threads']} thread(s): {r['fps']:.1f} fps vs {name} "
                                 f"{ref['fps']:.1f} fps -> {ratio:.1f}x (goal >= {GOAL_RATIO:g}x: "
                                 f"{'met' if ratio >= GOAL_RATIO else 'NOT met'})")
    shapes = sorted({(r["every_n"], r["liveness_schedule"]) for r in runs if "liveness_schedule" in r})
    for every_n, schedule in shapes:
        lines.append(f"edge configuration: detector every {every_n} frame(s) with the last boxes in between, "
                     f"liveness schedule {schedule}")
    one = [r for r in runs if r.get("pipeline", "").startswith("edge") and r["threads"] == 1]
    for r in one:
        ok = r["e2e"]["p50_ms"] <= GOAL_FRAME_MS
        lines.append(f"goal per frame <= {GOAL_FRAME_MS:g} ms on one core ({r['variant']}): p50 {r['e2e']['p50_ms']:.2f} ms, "
                     f"p99 {r['e2e']['p99_ms']:.2f} ms -> {'met' if ok else 'NOT met'}")
        lines.append(f"goal 0 allocations per frame ({r['variant']}): net heap {r['heap_net_bytes_per_frame']:+.0f} B/frame, "
                     f"{r['blocks_net_per_frame']:+.2f} blocks/frame in steady state, transient peak "
                     f"{r['heap_peak_kb']:.1f} KiB")
        v = r.get("verdict")
        if v:
            live_ms = v["elapsed_ms_on_30fps_timeline"] + r["e2e"]["p50_ms"]
            ok = live_ms <= GOAL_VERDICT_MS and r["e2e"]["p50_ms"] <= 1000 / FPS
            lines.append(f"goal verdict <= {GOAL_VERDICT_MS:g} ms after the first face frame at 30 fps ({r['variant']}): "
                         f"{v['kind']} after {v['frames_seen']} frames = {v['elapsed_ms_on_30fps_timeline']} ms of camera "
                         f"time + {r['e2e']['p50_ms']:.1f} ms processing -> {'met' if ok else 'NOT met'}")
    if not up:
        lines.append("upstream: not run (" + results.get("upstream_note", "no upstream environment") + ")")
    elif not any(name == UPSTREAM_CODE for name, _ in up):
        lines.append("upstream: rebuilt from the facts in ../shared/models/silent-face (its own code is not available "
                     "here; --upstream-src DIR runs a local checkout)")
    return lines


def orchestrate(args: argparse.Namespace) -> dict:
    results: dict = {"machine": _machine(), "runs": []}
    threads = [int(t) for t in args.threads.split(",")]
    variants = args.variants.split(",")
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        live_clip = None
        if args.source:
            source = args.source
            results["source_desc"] = source
        else:
            images = source_images()
            if not images:
                raise SystemExit(f"no development images under {SHARED / 'fas-dev'}; pass --source SPEC")
            clip = Path(tmp) / "bench.avi"
            n = write_clip(clip, images, hold=args.hold, total=args.frames + args.warmup)
            source = f"video://{clip}?loop=1"
            results["source_desc"] = (f"{n} frames 640x480 MJPG @30 fps from {len(images)} images of "
                                      f"../shared/fas-dev (letterboxed, {args.hold} frames each), decoded per read")
            live = [p for p in images if "/live/" in str(p)][:1]
            if live:
                live_clip_path = Path(tmp) / "live.avi"
                write_clip(live_clip_path, live, hold=90, total=90)
                live_clip = f"video://{live_clip_path}"
        py = args.upstream_python
        upstream_ok = False
        if args.no_upstream:
            results["upstream_note"] = "--no-upstream"
        elif not py or not Path(py).exists():
            results["upstream_note"] = (f"no upstream environment at {py}: make it with scripts/bench-env.sh "
                                        "(or set EDGE_BENCH_UPSTREAM_PYTHON)")
        elif args.source and not args.source.startswith("video://"):
            results["upstream_note"] = "upstream reads video files only; give --source video://FILE"
        else:
            upstream_ok = True
        results["load_before"] = os.getloadavg()
        # Per thread count, edge and upstream run back to back so they see similar machine load;
        # with --repeat, the fastest of the repeats is kept (others' load only ever slows a run down).
        for t in threads:
            for variant in variants:
                cmd = [sys.executable, "-m", "edge.bench", "--worker", "--variant", variant, "--threads", str(t),
                       "--source", source, "--frames", str(args.frames), "--warmup", str(args.warmup)]
                if args.every_n is not None:
                    cmd += ["--every-n", str(args.every_n)]
                if args.liveness_schedule is not None:
                    cmd += ["--liveness-schedule", args.liveness_schedule]
                if live_clip:
                    cmd += ["--live-clip", live_clip]
                if args.mode:
                    cmd += ["--mode", args.mode]
                log.info("running %s", " ".join(cmd))
                r = _best([_run_json(cmd, timeout=1800) for _ in range(args.repeat)])
                r.setdefault("pipeline", f"edge {variant}")
                r.setdefault("threads", t)
                results["runs"].append(r)
            if upstream_ok:
                path = source[len("video://"):].split("?", 1)[0]
                cmd = [py, str(UPSTREAM_SCRIPT), "--source", path, "--frames", str(args.frames),
                       "--warmup", str(args.warmup), "--threads", str(t)]
                # Held in memory (favours upstream), then as its code ships (weights reloaded per predict()).
                runs = [(UPSTREAM_HELD, []), (UPSTREAM_SHIPPED, ["--as-shipped"])]
                if args.upstream_src:
                    runs.append((UPSTREAM_CODE, ["--upstream-src", args.upstream_src]))
                for name, extra in runs:
                    r = _best([_run_json(cmd + extra, timeout=3600) for _ in range(args.repeat)])
                    r["pipeline"] = name
                    r.setdefault("threads", t)
                    results["runs"].append(r)
        results["load_after"] = os.getloadavg()
    results["summary"] = summarise(results)
    return results


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--frames", type=int, default=300, help="measured frames per configuration (default 300)")
    p.add_argument("--warmup", type=int, default=30, help="frames run before measuring (default 30)")
    p.add_argument("--threads", default="1,2", help="interpreter thread counts, comma separated (default 1,2)")
    p.add_argument("--variants", default="float32,int8", help="model variants (default float32,int8)")
    p.add_argument("--every-n", type=int, help="run the detector every n-th frame (default: the config default)")
    p.add_argument("--liveness-schedule", choices=("every_frame", "round_robin"),
                   help="liveness models on every frame, or one per frame in turn (default: the config default)")
    p.add_argument("--repeat", type=int, default=1, help="runs per configuration; the fastest is kept (default 1)")
    p.add_argument("--hold", type=int, default=10, help="frames each development image is held in the clip")
    p.add_argument("--source", help="camera spec to read instead of the generated clip (e.g. video://FILE?loop=1)")
    p.add_argument("--upstream-python", default=os.environ.get("EDGE_BENCH_UPSTREAM_PYTHON", DEFAULT_UPSTREAM_PYTHON),
                   help="python of the benchmark's PyTorch environment")
    p.add_argument("--no-upstream", action="store_true", help="skip the upstream pipeline")
    p.add_argument("--upstream-src", default=os.environ.get("EDGE_UPSTREAM_SRC"), metavar="DIR",
                   help="a local checkout of Silent-Face-Anti-Spoofing (never fetched by the bench): also run "
                        "upstream's own code ($EDGE_UPSTREAM_SRC)")
    p.add_argument("--mode", choices=("passive", "active", "step_up"),
                   help="liveness mode (default: the config default, active): active adds the landmark stage "
                        "(478-point mesh, blendshapes, pose; float32) and runs the challenge engine as the decision")
    p.add_argument("--json", metavar="FILE", help="also write the raw results as JSON to FILE")
    p.add_argument("--match", action="store_true",
                   help="only the 1:1 descriptor (float32 and int8 per --threads; pin one core with taskset -c 0)")
    # internal: one configuration in a fresh process
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--live-clip", help=argparse.SUPPRESS)
    return p


def handle(args: argparse.Namespace) -> int:
    if args.worker:
        args.threads = int(args.threads)
        try:
            out = run_worker(args)
        except Exception as err:  # report, don't hide: the orchestrator prints it in the table
            out = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(out))
        return 0 if "error" not in out else 1
    if getattr(args, "match", False):
        from edge.match.bench import run

        return run(runs=max(args.frames // 6, 10), warmup=5, threads=args.threads, variants=args.variants)
    results = orchestrate(args)
    render(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="benchmark the pipeline stage by stage, side by side with upstream",
                              description=__doc__.splitlines()[0])
    build_parser(p)
    p.set_defaults(func=handle)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    p = build_parser(argparse.ArgumentParser(prog="edge bench", description=__doc__.splitlines()[0]))
    return handle(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
