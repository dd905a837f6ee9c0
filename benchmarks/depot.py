"""Depot benchmarks against the standard tools, measured in the same run on the same files.

    python benchmarks/depot.py serve   # curl of a 1 GiB file from `airgap serve` vs from nginx (report only)
    python benchmarks/depot.py push    # airgap push vs `skopeo copy` of the same image (target <= 1.0x)

Each command runs --repeat times (default 3), alternating tools; the median wall time is compared. Files go
to a temporary directory (or --workdir) and are removed afterwards; servers started here are stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from nginx_conf import write_nginx_conf
from registry_fixtures import free_port, make_image, run_registry, stop_process, write_oci_layout
from run import AIRGAP, MiB, alternate, compile_bytecode, median_time, peak_rss_mib, run_timed, write_random

from airgap.bundle import finalize
from airgap.lock import Lock, LockedArtifact
from airgap.units import now_utc

BENCHMARKS = ("serve", "push")


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 300) -> None:
    """Wait until `port` accepts connections; `airgap serve` verifies the bundle first, which takes a while."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"{what} exited ({proc.returncode}) before listening:\n{err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def nginx_conf(work: Path, root: Path, port: int) -> Path:
    return write_nginx_conf(work, f"  sendfile on;\n  server {{ listen 127.0.0.1:{port}; root {root}; }}\n")


def skopeo_copy(layout: Path, registry: str) -> list[str]:
    """`skopeo copy` of the benchmark image from its OCI layout into REGISTRY (plain HTTP, loopback)."""
    return [
        "skopeo",
        "--insecure-policy",
        "copy",
        "-q",
        "--dest-tls-verify=false",
        f"oci:{layout}:1",
        f"docker://{registry}/bench/img:1",
    ]


def bench_serve(work: Path, repeat: int, size_mib: int) -> dict[str, float]:
    bundle = work / "bundle"
    rel = "layers/10-files/big.bin"
    path = bundle / rel
    path.parent.mkdir(parents=True)
    size = size_mib * MiB
    print(f"serve: writing a bundle holding one {size_mib} MiB file ...", flush=True)
    sha = write_random(path, size, 0)
    art = LockedArtifact(layer="files", name=path.name, path=rel, size=size, sha256=sha, url="https://x/")
    finalize(bundle, Lock(name="bench", target={}, created=now_utc(), artifacts=[art]))
    keys = work / "keys"
    keys.mkdir()
    ours_port, nginx_port = free_port(), free_port()
    ours_proc = subprocess.Popen(
        [*AIRGAP, "serve", str(bundle), "--listen", f"127.0.0.1:{ours_port}", "--trusted-keys", str(keys)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    conf = nginx_conf(work / "nginx", path.parent, nginx_port)
    nginx_proc = subprocess.Popen(
        ["/usr/sbin/nginx", "-c", str(conf), "-p", str(work / "nginx")], stderr=subprocess.PIPE
    )
    try:
        wait_port(ours_port, ours_proc, "airgap serve")
        wait_port(nginx_port, nginx_proc, "nginx")
        ours_url = f"http://127.0.0.1:{ours_port}/files/{path.name}"
        nginx_url = f"http://127.0.0.1:{nginx_port}/{path.name}"
        subprocess.run(["curl", "-fsS", "-o", "/dev/null", nginx_url], check=True)  # warm the page cache
        ours, theirs = alternate(
            repeat,
            lambda: run_timed(["curl", "-fsS", "-o", "/dev/null", ours_url]),
            lambda: run_timed(["curl", "-fsS", "-o", "/dev/null", nginx_url]),
        )
    finally:
        stop_process(ours_proc)
        stop_process(nginx_proc)
    t_ours = median_time(ours)
    t_theirs = median_time(theirs)
    ratio = t_ours / t_theirs
    print(
        f"serve:  airgap serve {t_ours:.2f}s ({size / MiB / t_ours:.0f} MiB/s)  |  "
        f"nginx {t_theirs:.2f}s ({size / MiB / t_theirs:.0f} MiB/s)  |  "
        f"airgap takes {ratio:.2f}x its time (report only)  |  curl of one {size_mib} MiB file"
    )
    return {"serve_ratio": ratio}


def bench_push(work: Path, repeat: int, layers: int, layer_mib: int) -> dict[str, float]:
    """airgap push of a collected bundle vs `skopeo copy` from an OCI layout of the same image, each into a
    fresh, empty registry every run: both start from local disk and end when the registry holds the image."""
    print(f"push: building an image of {layers} layers of {layer_mib} MiB ...", flush=True)
    tars = []
    for i in range(layers):
        raw = work / f"layer-{i}.bin"
        work.mkdir(parents=True, exist_ok=True)
        write_random(raw, layer_mib * MiB, 100 + i)
        tars.append(raw.read_bytes())
        raw.unlink()
    # Uncompressed layers: gzip of random bytes would only cost build time here, not change the transfer.
    image = make_image("bench/img", "1", tars, compress=False)
    del tars
    layout = work / "layout"
    write_oci_layout(layout, image)
    total = sum(image.layer_sizes)
    runs = [0]

    def fresh(name: str):
        runs[0] += 1
        d = work / f"reg-{name}-{runs[0]}"
        return run_registry(d, d / "storage")

    with fresh("source") as src:
        subprocess.run(skopeo_copy(layout, src.host), check=True, capture_output=True)
        doc = {
            "name": "push-bench",
            "target": {"os": "ubuntu-22.04", "arch": "amd64"},
            "insecure_registries": [src.host],
            "images": [f"{src.host}/bench/img:1"],
        }
        (work / "manifest.yaml").write_text(json.dumps(doc))
        bundle = work / "bundle"
        env = os.environ | {"DOCKER_HOST": "unix:///nonexistent/airgap-bench/docker.sock"}
        r = subprocess.run(
            [*AIRGAP, "-q", "collect", str(work / "manifest.yaml"), "-o", str(bundle), "--no-tool"],
            env=env,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise SystemExit(f"push: collect failed ({r.returncode}):\n{r.stderr}")

    def ours() -> tuple[float, int]:
        with fresh("airgap") as reg:
            res = run_timed(
                [*AIRGAP, "-q", "push", str(bundle), "--registry", reg.host, "--on-existing-tag", "overwrite"]
            )
        shutil.rmtree(reg.storage.parent)
        return res

    def theirs() -> tuple[float, int]:
        with fresh("skopeo") as reg:
            res = run_timed(skopeo_copy(layout, reg.host))
        shutil.rmtree(reg.storage.parent)
        return res

    ours_r, theirs_r = alternate(repeat, ours, theirs)
    t_ours = median_time(ours_r)
    t_theirs = median_time(theirs_r)
    rss = peak_rss_mib(ours_r)
    ratio = t_ours / t_theirs
    print(
        f"push:   airgap push {t_ours:.2f}s  |  skopeo copy {t_theirs:.2f}s  |  "
        f"airgap takes {ratio:.2f}x its time (target <= 1.0x)  |  {layers} layers, {total / MiB:.0f} MiB  |  "
        f"airgap peak RSS {rss:.0f} MiB"
    )
    return {"push_ratio": ratio}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", nargs="*", help="serve, push (default: both)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--serve-mib", type=int, default=1024, help="file size for the serve benchmark")
    p.add_argument("--push-layers", type=int, default=4)
    p.add_argument("--push-layer-mib", type=int, default=64)
    p.add_argument("--workdir", type=Path, help="where to put the test files (default: a temp dir)")
    args = p.parse_args()
    which = args.which or list(BENCHMARKS)
    unknown = set(which) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmark {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
    if shutil.which("curl") is None or not Path("/usr/sbin/nginx").exists():
        raise SystemExit("curl and nginx are needed: apt-get install curl nginx")
    compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="airgap-bench-", dir=args.workdir) as tmp:
        results: dict[str, float] = {}
        if "serve" in which:
            results |= bench_serve(Path(tmp) / "s", args.repeat, args.serve_mib)
            shutil.rmtree(Path(tmp) / "s")
        if "push" in which:
            results |= bench_push(Path(tmp) / "p", args.repeat, args.push_layers, args.push_layer_mib)
    ok = results.get("push_ratio", 0) <= 1.0
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
