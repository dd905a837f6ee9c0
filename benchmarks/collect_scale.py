"""How collect's cost grows with the number of files, and how it compares with curl.

    python benchmarks/collect_scale.py                    # N=1000 and N=4000 files, curl at 2000
    python benchmarks/collect_scale.py --sizes 500 2000 --curl-files 1000 --jobs 8

Every file is 4 KiB, served from loopback (airgap.localserver), so what is measured is collect's own
bookkeeping per file (recording, hashing, fsync), not the network. A collect whose cost per file stays
flat from 1,000 to 4,000 files is linear; the ratio printed is (time at 4000 / 4000) / (time at 1000 / 1000).
The curl run fetches the same files with `curl -Z` (parallel transfers, one config file of URLs and output
names) followed by `sync`, so both sides have the bytes on disk when the clock stops.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airgap.localserver import LocalHTTPServer  # noqa: E402
from benchmarks.run import compile_bytecode  # noqa: E402

FILE_SIZE = 4096


def make_files(root: Path, n: int) -> list[tuple[str, str]]:
    """n files of FILE_SIZE distinct bytes under root/f/; (name, sha256) of each."""
    (root / "f").mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        name = f"file-{i:05d}.bin"
        data = (hashlib.sha256(str(i).encode()).digest() * (FILE_SIZE // 32))[:FILE_SIZE]
        (root / "f" / name).write_bytes(data)
        out.append((name, hashlib.sha256(data).hexdigest()))
    return out


def write_manifest(path: Path, files: list[tuple[str, str]], server_url: str) -> None:
    lines = ["name: scale", 'target: {os: ubuntu-22.04, arch: amd64, python: "3.10"}', "files:"]
    for name, digest in files:
        lines += [f"  - url: https://example.com/f/{name}", f"    sha256: '{digest}'"]
    lines += ["mirrors:", f"  https://example.com: {server_url}"]
    path.write_text("\n".join(lines) + "\n")


def time_airgap(work: Path, files: list[tuple[str, str]], url: str, jobs: int) -> float:
    manifest = work / f"manifest-{len(files)}.yaml"
    write_manifest(manifest, files, url)
    out = work / f"bundle-{len(files)}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "airgap", "-q", "collect", str(manifest), "-o", str(out), "--no-tool"]
    cmd += ["--jobs", str(jobs)]
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"collect failed ({r.returncode}):\n{r.stderr}")
    shutil.rmtree(out, ignore_errors=True)
    return took


def time_curl(work: Path, files: list[tuple[str, str]], url: str, jobs: int) -> float:
    out = work / f"curl-{len(files)}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    config = work / "curl.cfg"
    config.write_text("".join(f'url = "{url}/f/{name}"\noutput = "{out / name}"\n' for name, _ in files))
    start = time.perf_counter()
    subprocess.run(
        ["curl", "-sS", "--no-progress-meter", "--fail", "-Z", "--parallel-max", str(jobs), "-K", str(config)],
        check=True,
    )
    subprocess.run(["sync"], check=True)
    took = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs=2, default=[1000, 4000], metavar=("SMALL", "LARGE"))
    ap.add_argument("--curl-files", type=int, default=2000)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="airgap-collect-scale-", dir=args.workdir))
    try:
        upstream = work / "upstream"
        all_files = make_files(upstream, max(*args.sizes, args.curl_files))
        with LocalHTTPServer(upstream) as server:
            small, large = args.sizes
            t_small = time_airgap(work, all_files[:small], server.url, args.jobs)
            t_large = time_airgap(work, all_files[:large], server.url, args.jobs)
            per_small, per_large = t_small / small * 1000, t_large / large * 1000
            print(f"airgap collect {small:>5} files: {t_small:7.2f} s ({per_small:.2f} ms/file)")
            print(f"airgap collect {large:>5} files: {t_large:7.2f} s ({per_large:.2f} ms/file)")
            print(f"cost per file at {large} / at {small}: {per_large / per_small:.2f} (1.00 is linear)")
            n = args.curl_files
            t_airgap = time_airgap(work, all_files[:n], server.url, args.jobs)
            t_curl = time_curl(work, all_files[:n], server.url, args.jobs)
            print(f"airgap collect {n:>5} files: {t_airgap:7.2f} s")
            print(f"curl -Z + sync {n:>5} files: {t_curl:7.2f} s")
            print(f"airgap / curl: {t_airgap / t_curl:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
