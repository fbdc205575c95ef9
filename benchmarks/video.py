"""Videos: what the emulator's real renders cost, and what checking a video adds to a download.

* Render: ``emulator.render.render`` in this process, for 121 and 241 frames at the emulator's
  default size, from ``example_dags/data/lighthouse.png``; wall and CPU seconds (every thread of the
  process), and what ``video_decode.decode_all`` and ``write_poster`` then cost on the result.
* Through the emulator: the first download of a fresh output (render, then transfer) and a second
  download of the same output (from the render cache).
* The check's overhead on a streamed download: an emulator output of 100 MB (synthetic, so no render
  is timed) streamed with httpx, each piece hashed with SHA-256, with and without a
  ``video.VideoInspector`` fed the same pieces. The loop writes no file, so the check's share is
  larger than in a real download, not smaller. Rounds alternate which variant goes first; the
  check's share is the median of each round's ratio. The target is on the client's CPU seconds:
  the check adds computation only, and on this shared machine the wall time of a 0.2 s transfer
  varies by more than the 5% being measured.
  The same pieces replayed from memory give the check's CPU cost without the network.

With two cores or more, the emulator is pinned to the first and this process to the second for
the parts that go through the emulator, so the server does not take the client's core.

    python benchmarks/video.py [--rounds 9] [--no-write]
    python benchmarks/video.py --smoke      # one render per length, one round over 10 MB; writes nothing
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import time
import tracemalloc
from typing import Any

import _common as common
import httpx

from airflow_provider_dreamina.emulator import run_emulator
from airflow_provider_dreamina.emulator.render import RenderRequest, render
from airflow_provider_dreamina.emulator.settings import DEFAULT_LONG_SIDE, MODEL_ID
from airflow_provider_dreamina.outputs.decode import decode_all, write_poster
from airflow_provider_dreamina.outputs.video import VideoInspector, inspect_file

IMAGE = common.ROOT / "example_dags" / "data" / "lighthouse.png"
FRAMES = (121, 241)
DOWNLOAD_BYTES = 100 * 10**6
RENDER_RUNS = 3
SMOKE_DOWNLOAD_BYTES = 10 * 10**6
RENDER_TARGET_SECONDS = 5.0
OVERHEAD_TARGET = 0.05


def _render_figures(runs: int = RENDER_RUNS) -> list[dict[str, Any]]:
    image = IMAGE.read_bytes()
    figures = []
    for frames in FRAMES:
        walls, cpus, decodes, posters = [], [], [], []
        data = b""
        for run in range(runs):
            common.log(f"video: render {frames} frames, run {run + 1} of {runs}")
            request = RenderRequest(
                image=image, prompt="benchmark", seed=run, frames=frames, long_side=DEFAULT_LONG_SIDE
            )
            started, cpu_started = time.perf_counter(), time.process_time()
            data = render(request)
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu_started)
            started = time.perf_counter()
            assert decode_all(io.BytesIO(data)) == frames
            decodes.append(time.perf_counter() - started)
            started = time.perf_counter()
            write_poster(io.BytesIO(data), io.BytesIO())
            posters.append(time.perf_counter() - started)
        facts = inspect_file(io.BytesIO(data))
        figures.append(
            {
                "frames": frames,
                "facts": facts.as_manifest(),
                "summary": facts.summary(),
                "bytes": len(data),
                "render_seconds": common.median(walls),
                "render_cpu_seconds": common.median(cpus),
                "decode_seconds": common.median(decodes),
                "poster_seconds": common.median(posters),
            }
        )
    return figures


def _pin(emulator_pid: int) -> bool:
    """Emulator on the first core, this process on the second; False when there is one core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return False
    os.sched_setaffinity(emulator_pid, {cores[0]})
    os.sched_setaffinity(0, {cores[1]})
    return True


def _output_url(client: httpx.Client, emulator: Any, body: dict[str, Any], **script: Any) -> str:
    emulator.script_jobs(queue_seconds=0, run_seconds=0, **script)
    submitted = client.post(f"/v1/models/{MODEL_ID}", json=body)
    submitted.raise_for_status()
    result = client.get(f"/v1/requests/{submitted.json()['request_id']}/result")
    url: str = result.json()["output"]["video"]
    return url


def _timed_get(client: httpx.Client, url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    response = client.get(url)
    response.raise_for_status()
    return time.perf_counter() - started, response.content


def _stream(client: httpx.Client, url: str, inspect: bool) -> tuple[float, float, list[int]]:
    """Wall and CPU seconds of one hashed download; the sizes of the pieces it received."""
    pieces = []
    started, cpu_started = time.perf_counter(), time.process_time()
    digest = hashlib.sha256()
    inspector = VideoInspector() if inspect else None
    with client.stream("GET", url) as response:
        response.raise_for_status()
        for piece in response.iter_bytes():
            digest.update(piece)
            if inspector is not None:
                inspector.feed(piece)
            pieces.append(len(piece))
    if inspector is not None:
        inspector.finish()
    return time.perf_counter() - started, time.process_time() - cpu_started, pieces


def _replay(body: bytes, pieces: list[int], inspect: bool) -> float:
    """CPU seconds to hash (and check) the body again from memory, in the same pieces."""
    view = memoryview(body)
    cpu_started = time.process_time()
    digest = hashlib.sha256()
    inspector = VideoInspector() if inspect else None
    position = 0
    for size in pieces:
        piece = view[position : position + size]
        digest.update(piece)
        if inspector is not None:
            inspector.feed(piece)
        position += size
    if inspector is not None:
        inspector.finish()
    return time.process_time() - cpu_started


def _through_emulator(rounds: int, download_bytes: int = DOWNLOAD_BYTES) -> dict[str, Any]:
    image_uri = "data:image/png;base64," + base64.b64encode(IMAGE.read_bytes()).decode()
    figures: dict[str, Any] = {"downloads": []}
    with run_emulator() as emulator:
        figures["pinned"] = _pin(emulator.process.pid)
        headers = {"Authorization": f"Bearer {emulator.token}"}
        with httpx.Client(
            base_url=emulator.base_url, headers=headers, timeout=120, trust_env=False
        ) as client:
            for frames in FRAMES:
                common.log(f"video: first and cached download of {frames} frames")
                body = {"prompt": f"benchmark {time.time()}", "image_urls": [image_uri], "frames": frames}
                url = _output_url(client, emulator, body)
                first, data = _timed_get(client, url)
                cached, again = _timed_get(client, url)
                assert again == data
                figures["downloads"].append({"frames": frames, "first": first, "cached": cached})

            url = _output_url(
                client,
                emulator,
                {"prompt": "overhead", "image_urls": [image_uri]},
                output_bytes=download_bytes,
            )
            body_bytes = client.get(url).content
            times: dict[str, list[float]] = {"hash": [], "hash + check": []}
            cpu: dict[str, list[float]] = {"hash": [], "hash + check": []}
            pieces: list[int] = []
            for round_number in range(rounds):
                common.log(f"video: overhead round {round_number + 1} of {rounds}")
                order = [False, True] if round_number % 2 == 0 else [True, False]
                for inspect in order:
                    wall, used, pieces = _stream(client, url, inspect)
                    times["hash + check" if inspect else "hash"].append(wall)
                    cpu["hash + check" if inspect else "hash"].append(used)
    replay = {
        "hash": common.median([_replay(body_bytes, pieces, False) for _ in range(rounds)]),
        "hash + check": common.median([_replay(body_bytes, pieces, True) for _ in range(rounds)]),
    }
    tracemalloc.start()
    _replay(body_bytes, pieces, True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    figures.update(
        {
            # Each round's two variants ran back to back: their ratio cancels the machine's drift.
            "paired_wall_overhead": common.median(
                [
                    checked / plain - 1
                    for plain, checked in zip(times["hash"], times["hash + check"], strict=True)
                ]
            ),
            "paired_cpu_overhead": common.median(
                [checked / plain - 1 for plain, checked in zip(*cpu.values(), strict=True)]
            ),
            "rounds": {"wall": times, "cpu": cpu},
            "stream_seconds": {name: common.median(values) for name, values in times.items()},
            "stream_cpu_seconds": {name: common.median(values) for name, values in cpu.items()},
            "replay_cpu_seconds": replay,
            "pieces": len(pieces),
            "largest_piece": max(pieces),
            "check_peak_bytes": peak,
            "download_bytes": download_bytes,
        }
    )
    return figures


def _report(
    renders: list[dict[str, Any]], through: dict[str, Any], rounds: int, render_runs: int = RENDER_RUNS
) -> str:
    render_rows = [
        [
            f"{item['frames']} frames: {item['summary']}",
            f"{item['bytes'] / 1000:,.0f} kB",
            item["render_seconds"],
            item["render_cpu_seconds"],
            item["frames"] / item["render_seconds"],
            item["decode_seconds"],
            item["poster_seconds"],
        ]
        for item in renders
    ]
    render_table = common.table(
        ["render", "size", "render s", "render CPU s", "frames/s", "decode_all s", "write_poster s"],
        render_rows,
    )
    download_table = common.table(
        ["emulator output", "first download s (render + transfer)", "second download s (cached)"],
        [[f"{item['frames']} frames", item["first"], item["cached"]] for item in through["downloads"]],
    )
    wall, used, replay = (
        through["stream_seconds"],
        through["stream_cpu_seconds"],
        through["replay_cpu_seconds"],
    )
    overhead = wall["hash + check"] / wall["hash"] - 1
    cpu_overhead = used["hash + check"] / used["hash"] - 1
    replay_overhead = replay["hash + check"] / replay["hash"] - 1
    megabytes = through["download_bytes"] / 10**6
    stream_table = common.table(
        [f"{megabytes:,.0f} MB streamed download", "wall s", "MB/s", "CPU s", "CPU s, replayed from memory"],
        [
            [name, wall[name], megabytes / wall[name], used[name], replay[name]]
            for name in ("hash", "hash + check")
        ]
        + [
            [
                "check's share (median of the rounds' ratios)",
                f"{overhead:+.1%}",
                "-",
                f"{cpu_overhead:+.1%}",
                f"{replay_overhead:+.1%}",
            ]
        ],
    )
    slowest = max(item["render_seconds"] for item in renders)
    targets = common.table(
        ["target", "measured", "verdict"],
        [
            [
                f"a 241-frame render at the default size (long side {DEFAULT_LONG_SIDE}) takes < "
                f"{RENDER_TARGET_SECONDS:.0f} s",
                f"{slowest:.2f} s",
                common.verdict(slowest < RENDER_TARGET_SECONDS),
            ],
            [
                f"checking the video adds < 5% to the CPU time of a {megabytes:,.0f} MB hashed download",
                f"{cpu_overhead:+.1%} (wall time: {overhead:+.1%})",
                common.verdict(cpu_overhead < OVERHEAD_TARGET),
            ],
            [
                "the check's memory does not grow with the download",
                f"peak {through['check_peak_bytes'] / 1024:.0f} KiB over {megabytes:,.0f} MB",
                common.verdict(through["check_peak_bytes"] < 1024 * 1024),
            ],
        ],
    )
    pinned = (
        "emulator and client pinned to different cores"
        if through["pinned"]
        else "one core: emulator and client share it"
    )
    return (
        f"Renders: median of {render_runs} per length, in-process, from `lighthouse.png` (768 by 512). "
        f"Downloads: {pinned}; {rounds} alternating rounds, {through['pieces']:,} pieces of up to "
        f"{through['largest_piece'] // 1024} KiB. MB = 10^6 bytes. Measured {common.stamp()}.\n\n"
        f"{render_table}\n\n{download_table}\n\n{stream_table}\n\n{targets}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds of the overhead comparison")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--smoke", action="store_true", help="one render per length, one round over 10 MB; writes nothing"
    )
    args = parser.parse_args()
    render_runs, download_bytes = RENDER_RUNS, DOWNLOAD_BYTES
    if args.smoke:
        args.rounds, args.no_write = 1, True
        render_runs, download_bytes = 1, SMOKE_DOWNLOAD_BYTES

    renders = _render_figures(render_runs)
    through = _through_emulator(args.rounds, download_bytes)
    text = _report(renders, through, args.rounds, render_runs)
    print("## Videos\n\n" + text + "\n")
    if not args.no_write:
        common.update_section("video", text)
        common.save_results("video", {"renders": renders, "through_emulator": through})


if __name__ == "__main__":
    main()
