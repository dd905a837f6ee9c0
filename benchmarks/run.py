"""Benchmarks against the standard tools, measured in the same run on the same files.

    python benchmarks/run.py                # all three
    python benchmarks/run.py verify-small   # airgap verify vs `sha256sum -c SHA256SUMS`, 2,000 files of 4 KiB
    python benchmarks/run.py verify         # airgap verify vs `sha256sum -c SHA256SUMS` on a ~2 GiB bundle
    python benchmarks/run.py collect        # airgap collect vs `curl -o && sync` of a 1 GiB file from loopback

Each command runs --repeat times (default 3), alternating tools so page cache and CPU frequency treat
them alike; the median wall time is compared. Peak memory (max RSS) of airgap's process is reported
too. Files go to a temporary directory (or --workdir) and are removed afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airgap.bundle import finalize  # noqa: E402
from airgap.localserver import LocalHTTPServer  # noqa: E402
from airgap.lock import Lock, LockedArtifact  # noqa: E402
from airgap.units import now_utc  # noqa: E402

MiB = 1 << 20
BENCHMARKS = ("verify-small", "verify", "collect")
AIRGAP = [sys.executable, "-m", "airgap"]


def compile_bytecode() -> None:
    """Compile airgap's modules as `pip install` does: run from a source checkout (and with
    PYTHONDONTWRITEBYTECODE set, as some CI images do) every command would otherwise compile them anew, and
    the small-bundle timings would measure the compiler rather than airgap."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "airgap")], check=True, stdout=subprocess.DEVNULL
    )


def run_timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command, measured with wait4 on that child alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return elapsed, usage.ru_maxrss


def median_time(runs: list[tuple[float, int]]) -> float:
    """The median wall time of (seconds, peak RSS KiB) runs."""
    return statistics.median(t for t, _ in runs)


def peak_rss_mib(runs: list[tuple[float, int]]) -> float:
    return max(r for _, r in runs) / 1024


def alternate(
    repeat: int, a: Callable[[], tuple[float, int]], b: Callable[[], tuple[float, int]]
) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    ra, rb = [], []
    for _ in range(repeat):
        ra.append(a())
        rb.append(b())
    return ra, rb


def write_random(path: Path, size: int, seed: int) -> str:
    """Incompressible bytes, quickly: a sha256-seeded block pattern varied per MiB; returns the sha256."""
    h = hashlib.sha256()
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        left = size
        n = 0
        while left:
            chunk = hashlib.sha256(f"{seed}:{n}".encode()).digest() + block[32:]
            chunk = chunk[: min(left, MiB)]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
            n += 1
    return h.hexdigest()


def bench_verify_small(work: Path, repeat: int, files: int) -> dict[str, float]:
    """Many small files: what is measured is airgap's start-up and per-file cost, not hashing speed."""
    bundle = work / "bundle"
    print(f"verify-small: writing a bundle of {files} files of 4 KiB ...", flush=True)
    arts = []
    for i in range(files):
        rel = f"layers/10-files/f/file-{i:05d}.bin"
        path = bundle / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = hashlib.sha256(str(i).encode()).digest() * 128  # 4 KiB, distinct per file
        path.write_bytes(data)
        arts.append(
            LockedArtifact(
                layer="files",
                name=path.name,
                path=rel,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                url="https://x/",
            )
        )
    finalize(bundle, Lock(name="bench", target={}, created=now_utc(), artifacts=arts))
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle, check=True)  # warm the page cache
    ours, theirs = alternate(
        repeat,
        lambda: run_timed([*AIRGAP, "-q", "verify", str(bundle)]),
        lambda: run_timed(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle),
    )
    t_ours = median_time(ours)
    t_theirs = median_time(theirs)
    ratio = t_ours / t_theirs
    print(
        f"verify-small: airgap verify {t_ours:.3f}s  |  sha256sum -c {t_theirs:.3f}s  |  "
        f"airgap takes {ratio:.2f}x its time (target <= 1.0x)  |  {files} files of 4 KiB"
    )
    return {"verify_small_ratio": ratio}


def bench_verify(work: Path, repeat: int, total_mib: int) -> dict[str, float]:
    bundle = work / "bundle"
    layout = [256] * 4 + [48] * 16 + [16] * 16  # 2048 MiB in 36 files: a few big, many medium
    scale = total_mib / sum(layout)
    arts = []
    print(f"verify: writing a {total_mib} MiB bundle of {len(layout)} files ...", flush=True)
    for i, mib in enumerate(layout):
        rel = f"layers/10-files/file-{i:02d}.bin"
        path = bundle / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        size = max(1, int(mib * scale * MiB))
        arts.append(
            LockedArtifact(
                layer="files", name=path.name, path=rel, size=size, sha256=write_random(path, size, i), url="https://x/"
            )
        )
    finalize(bundle, Lock(name="bench", target={}, created=now_utc(), artifacts=arts))
    # Warm the page cache once so both tools read from memory, as the first of them would otherwise pay alone.
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle, check=True)

    ours, theirs = alternate(
        repeat,
        lambda: run_timed([*AIRGAP, "-q", "verify", str(bundle)]),
        lambda: run_timed(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle),
    )
    t_ours = median_time(ours)
    t_theirs = median_time(theirs)
    rss = peak_rss_mib(ours)
    ratio = t_theirs / t_ours
    print(
        f"verify:  airgap verify {t_ours:.2f}s  |  sha256sum -c {t_theirs:.2f}s  |  "
        f"airgap is {ratio:.1f}x faster (target >= 10x)  |  airgap peak RSS {rss:.0f} MiB (target < 100)"
    )
    return {"verify_speedup": ratio, "verify_rss_mib": rss}


def bench_collect(work: Path, repeat: int, size_mib: int) -> dict[str, float]:
    root = work / "upstream"
    root.mkdir(parents=True, exist_ok=True)
    print(f"collect: writing a {size_mib} MiB file to serve ...", flush=True)
    digest = write_random(root / "big.bin", size_mib * MiB, 7)
    with LocalHTTPServer(root) as server:
        url = f"{server.url}/big.bin"
        manifest = work / "manifest.yaml"
        manifest.write_text(
            f"name: bench\ntarget: {{os: ubuntu-22.04}}\nfiles:\n  - url: {url}\n    sha256: '{digest}'\n"
        )
        out_ours = work / "bundle"
        out_curl = work / "curl.bin"

        def ours() -> tuple[float, int]:
            shutil.rmtree(out_ours, ignore_errors=True)
            # --no-tool: this measures the download; airgap's own wheels come from PyPI, not this server
            return run_timed([*AIRGAP, "-q", "collect", str(manifest), "-o", str(out_ours), "--no-tool"])

        def curl() -> tuple[float, int]:
            out_curl.unlink(missing_ok=True)
            return run_timed(["curl", "-sS", "--fail", "-o", str(out_curl), url])

        def curl_synced() -> tuple[float, int]:
            # airgap fsyncs each file before calling it complete; this is curl with the same guarantee.
            out_curl.unlink(missing_ok=True)
            return run_timed(["sh", "-c", f"curl -sS --fail -o '{out_curl}' '{url}' && sync '{out_curl}'"])

        ours_r, curl_r = alternate(repeat, ours, curl)
        _, synced_r = alternate(repeat, ours, curl_synced)
    t_ours = median_time(ours_r)
    t_curl = median_time(curl_r)
    t_synced = median_time(synced_r)
    rss = peak_rss_mib(ours_r)
    ratio, ratio_synced = t_ours / t_curl, t_ours / t_synced
    print(
        f"collect: airgap collect {t_ours:.2f}s (sha256 + fsync included)  |  curl -o {t_curl:.2f}s: "
        f"{ratio:.2f}x  |  curl -o && sync {t_synced:.2f}s: {ratio_synced:.2f}x (target <= 1.2x)  |  "
        f"airgap peak RSS {rss:.0f} MiB"
    )
    return {"collect_ratio": ratio_synced, "collect_ratio_unsynced": ratio, "collect_rss_mib": rss}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", nargs="*", help="verify-small, verify, collect (default: all three)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--small-files", type=int, default=2000, help="files of 4 KiB for verify-small")
    p.add_argument("--verify-mib", type=int, default=2048, help="bundle size for the verify benchmark")
    p.add_argument("--collect-mib", type=int, default=1024, help="file size for the collect benchmark")
    p.add_argument("--workdir", type=Path, help="where to put the test files (default: a temp dir)")
    args = p.parse_args()
    which = args.which or list(BENCHMARKS)
    unknown = set(which) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmark {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
    for tool in ("sha256sum", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: run scripts/test.sh once, or apt-get install {tool}")
    compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="airgap-bench-", dir=args.workdir) as tmp:
        results: dict[str, float] = {}
        if "verify-small" in which:
            results |= bench_verify_small(Path(tmp) / "s", args.repeat, args.small_files)
            shutil.rmtree(Path(tmp) / "s")
        if "verify" in which:
            results |= bench_verify(Path(tmp) / "v", args.repeat, args.verify_mib)
            shutil.rmtree(Path(tmp) / "v")
        if "collect" in which:
            results |= bench_collect(Path(tmp) / "c", args.repeat, args.collect_mib)
    ok = results.get("verify_small_ratio", 0) <= 1.0
    ok = ok and results.get("verify_speedup", 99) >= 10 and results.get("verify_rss_mib", 0) < 100
    ok = ok and results.get("collect_ratio", 0) <= 1.2
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
