"""Images: airgap's daemonless pull vs `skopeo copy`, storage saved by sharing, and loading on the server.

    python benchmarks/images.py                  # pull + storage (+ load when root and dockerd are here)
    python benchmarks/images.py --base-mib 512   # bigger images

A local Debian `docker-registry` on 127.0.0.1 serves two images of a few hundred MiB that share their base
layer (incompressible bytes, gzip level 1, as pushed by skopeo). Measured in the same run, alternating
the tools --repeat times (median wall time compared):

- pull: `airgap collect` of one image vs `skopeo copy docker://... docker-archive:...` of the same image
  (both verify every blob's sha256; skopeo writes one tar, airgap content-addressed blobs);
- storage: bytes airgap stores for both images vs the sum of the images' sizes (what one docker-archive
  per image, `docker save` style, holds);
- load (needs root, dockerd): airgap's install (a docker-archive streamed from the bundle's blobs into the
  daemon) vs `docker load -i` of skopeo's tar, each into a private vfs dockerd, and the extra disk each
  needs beside the bundle.
"""

from __future__ import annotations

import argparse
import json
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

from airgap.host import Host  # noqa: E402
from airgap.install_context import InstallContext  # noqa: E402
from airgap.layers.images import ImagesLayer  # noqa: E402
from airgap.lock import Lock  # noqa: E402
from tests.dockerd import dockerd_unavailable, run_dockerd  # noqa: E402
from tests.registry_fixtures import (  # noqa: E402
    make_image,
    missing_tools,
    run_registry,
    skopeo_push,
    tar_layer,
    write_oci_layout,
)

MiB = 1 << 20
AIRGAP = [sys.executable, "-m", "airgap"]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.decode()}")
    return time.perf_counter() - start


def alternate(repeat: int, a: Callable[[], float], b: Callable[[], float]) -> tuple[float, float]:
    ra, rb = [], []
    for _ in range(repeat):
        ra.append(a())
        rb.append(b())
    return statistics.median(ra), statistics.median(rb)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def push_images(work: Path, host: str, base_mib: int, top_mib: int) -> list[str]:
    print(f"images: building two images sharing a {base_mib} MiB base layer (+{top_mib} MiB each) ...", flush=True)
    base = tar_layer({"base.bin": os.urandom(base_mib * MiB)})
    refs = []
    for name in ("x", "y"):
        # gzip level 1, like a fast build; skopeo pushes compressed layers as they are.
        img = make_image(
            f"bench/{name}", "1", [base, tar_layer({f"{name}.bin": os.urandom(top_mib * MiB)})], compresslevel=1
        )
        layout = work / "oci" / name
        write_oci_layout(layout, img)
        skopeo_push(layout, "1", f"{host}/bench/{name}:1")
        refs.append(f"{host}/bench/{name}:1")
    return refs


def manifest_for(work: Path, refs: list[str], name: str) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(json.dumps({"name": "bench", "target": {"os": "ubuntu-22.04", "arch": "amd64"}, "images": refs}))
    return path


def bench_pull(work: Path, refs: list[str], repeat: int, env: dict[str, str]) -> dict[str, float]:
    one = manifest_for(work, refs[:1], "one")
    out_ours, out_skopeo = work / "bundle-one", work / "skopeo-x.tar"

    def ours() -> float:
        shutil.rmtree(out_ours, ignore_errors=True)
        return timed([*AIRGAP, "-q", "collect", str(one), "-o", str(out_ours), "--no-tool"], env)

    def skopeo() -> float:
        out_skopeo.unlink(missing_ok=True)
        return timed(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "-q",
                "--src-tls-verify=false",
                f"docker://{refs[0]}",
                f"docker-archive:{out_skopeo}:{refs[0].split('/', 1)[1]}",
            ]
        )

    t_ours, t_skopeo = alternate(repeat, ours, skopeo)
    size = du(out_ours / "layers")
    print(
        f"pull:    airgap collect {t_ours:.2f}s  |  skopeo copy -> docker-archive {t_skopeo:.2f}s  |  "
        f"airgap takes {t_ours / t_skopeo:.2f}x skopeo's time (target <= 1.0x) for {size / MiB:.0f} MiB "
        f"({size / MiB / t_ours:.0f} MiB/s)"
    )
    return {"pull_ratio": t_ours / t_skopeo}


def bench_storage(work: Path, refs: list[str], env: dict[str, str]) -> Path:
    both = manifest_for(work, refs, "both")
    bundle = work / "bundle-both"
    timed([*AIRGAP, "-q", "collect", str(both), "-o", str(bundle), "--no-tool"], env)
    lock = Lock.read(bundle)
    stats = next(a.meta for a in lock.artifacts if a.path.endswith("/index.json"))
    stored = du(bundle / "layers" / "07-images")
    print(
        f"storage: {stats['images']} images weigh {stats['image_bytes'] / MiB:.0f} MiB one by one; the bundle "
        f"stores {stored / MiB:.0f} MiB ({stats['saved_bytes'] / MiB:.0f} MiB saved, "
        f"{stored / stats['image_bytes']:.0%} of the sum)"
    )
    return bundle


def bench_load(work: Path, bundle: Path, refs: list[str], repeat: int) -> None:
    reason = dockerd_unavailable()
    if reason:
        print(f"load:    skipped ({reason})")
        return
    skopeo_tar = work / "skopeo-x.tar"
    one = manifest_for(work, refs[:1], "one")
    one_bundle = work / "bundle-one"
    if not (one_bundle / "SHA256SUMS").exists():
        timed([*AIRGAP, "-q", "collect", str(one), "-o", str(one_bundle), "--no-tool"])
    with run_dockerd(work / "dockerd") as d:
        client = d.client(timeout=600)
        layer = ImagesLayer()

        def clean() -> None:
            for img in client.images.list():
                client.images.remove(img.id, force=True)

        def ours() -> float:
            clean()
            ctx = InstallContext(Host(env=d.env()), one_bundle, Lock.read(one_bundle))
            start = time.perf_counter()
            layer.install(ctx)
            return time.perf_counter() - start

        def docker_load() -> float:
            clean()
            return timed(["docker", "--host", d.host, "load", "-q", "-i", str(skopeo_tar)])

        t_ours, t_load = alternate(repeat, ours, docker_load)
        clean()
    tar_mib = skopeo_tar.stat().st_size / MiB
    print(
        f"load:    airgap install (streamed from blobs) {t_ours:.2f}s  |  docker load -i {t_load:.2f}s  |  "
        f"{t_ours / t_load:.2f}x; extra disk beside the bundle: airgap 0 MiB, a docker-archive per image "
        f"{tar_mib:.0f} MiB"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--base-mib", type=int, default=192, help="size of the shared base layer")
    p.add_argument("--top-mib", type=int, default=64, help="size of each image's own layer")
    p.add_argument("--no-load", action="store_true", help="skip the dockerd load benchmark")
    p.add_argument("--workdir", type=Path, help="where to put the files (default: a temp dir)")
    args = p.parse_args()
    missing = missing_tools()
    if missing:
        raise SystemExit(f"needs {', '.join(missing)}: run scripts/test.sh once (it installs them)")
    env = dict(os.environ, DOCKER_HOST="unix:///nonexistent/airgap-bench.sock")  # collect needs no daemon
    with tempfile.TemporaryDirectory(prefix="airgap-bench-images-", dir=args.workdir) as tmp:
        work = Path(tmp)
        with run_registry(work / "registry", work / "storage") as reg:
            refs = push_images(work, reg.host, args.base_mib, args.top_mib)
            results = bench_pull(work, refs, args.repeat, env)
            bundle = bench_storage(work, refs, env)
        if not args.no_load:
            bench_load(work, bundle, refs, args.repeat)
    ok = results["pull_ratio"] <= 1.0
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
