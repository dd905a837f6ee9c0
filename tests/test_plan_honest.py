"""`plan` tells what it does not know: an unreachable host is named with its cause and exits 3, unknown sizes
are never summed as 0, and `--media` never says "fits" while sizes are missing (issue "honest answers")."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from airgap.errors import EXIT_OK, EXIT_UPSTREAM
from airgap.plan import PlanRow, media_verdict, total_text
from tests.conftest import CUDA, DOCKER, DRIVER, SCRIPT, Upstream, run_airgap

MODEL = "\n  - repo: Qwen/Qwen2.5-7B-Instruct"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: bound, read, closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def point_mirrors(path: Path, upstream: Upstream, base: str, only: str = "") -> None:
    """Rewrite the manifest's mirrors from the local upstream to `base` (only the `only` prefix's, if given)."""
    lines = []
    for line in path.read_text().splitlines():
        if upstream.url in line and only in line.split(": ", 1)[0]:
            line = line.replace(upstream.url, base)
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")


def total_line(stdout: str) -> str:
    found = [line for line in stdout.splitlines() if line.startswith("total:")]
    assert len(found) == 1, stdout
    return found[0]


def test_refused_connection_is_named_and_exits_3(upstream: Upstream, tmp_path: Path) -> None:
    port = closed_port()
    manifest = upstream.manifest(tmp_path)
    point_mirrors(manifest, upstream, f"http://127.0.0.1:{port}")
    r = run_airgap("plan", str(manifest))
    assert r.returncode == EXIT_UPSTREAM, r.stdout + r.stderr
    assert f"127.0.0.1:{port}" in r.stderr
    assert "connection refused" in r.stderr
    assert "Traceback" not in r.stderr
    total = total_line(r.stdout)
    assert "0 B" not in total and "unknown" in total, total
    # What it knows is still printed: the table with each artifact and the compatibility verdict.
    for rel in (DRIVER, CUDA, DOCKER, SCRIPT):
        assert rel.rsplit("/", 1)[-1] in r.stdout


def test_refused_connection_in_json(upstream: Upstream, tmp_path: Path) -> None:
    port = closed_port()
    manifest = upstream.manifest(tmp_path)
    point_mirrors(manifest, upstream, f"http://127.0.0.1:{port}")
    r = run_airgap("plan", str(manifest), "--json")
    assert r.returncode == EXIT_UPSTREAM, r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is False
    assert [(u["host"], u["cause"], u["artifacts"]) for u in data["unreachable"]] == [
        (f"127.0.0.1:{port}", "connection refused", 4)
    ]
    assert any(f"127.0.0.1:{port}" in w and "connection refused" in w for w in data["warnings"])
    assert data["unknown_size"] == 4 and data["total_is_lower_bound"] is True
    assert "0 B" not in data["total_text"]
    assert all(row["size"] is None and "connection refused" in row["problem"] for row in data["rows"])
    assert f"127.0.0.1:{port}" in r.stderr  # stderr says it too, for a script that only shows errors


def test_unresolvable_host_is_a_dns_failure(upstream: Upstream, tmp_path: Path) -> None:
    # `.invalid` is reserved (RFC 6761): it never resolves, so no network is needed to get the failure.
    manifest = upstream.manifest(tmp_path)
    point_mirrors(manifest, upstream, "https://nvidia.invalid", only="https://us.download.nvidia.com")
    r = run_airgap("plan", str(manifest))
    assert r.returncode == EXIT_UPSTREAM, r.stdout + r.stderr
    assert "cannot reach nvidia.invalid" in r.stderr
    # A resolver that answers oddly still gets exit 3 and the host named; the usual one is DNS's failure.
    assert "DNS" in r.stderr or "cannot resolve" in r.stderr or "connection failed" in r.stderr
    # The other hosts answered: their sizes are summed, and the total says it is only part of it.
    total = total_line(r.stdout)
    assert total.startswith("total: at least ") and "(1 size unknown)" in total, total
    for rel in (CUDA, DOCKER, SCRIPT):
        assert rel.rsplit("/", 1)[-1] in r.stdout


def test_unresolvable_host_in_json(upstream: Upstream, tmp_path: Path) -> None:
    manifest = upstream.manifest(tmp_path)
    point_mirrors(manifest, upstream, "https://nvidia.invalid", only="https://us.download.nvidia.com")
    r = run_airgap("plan", str(manifest), "--json", "--media", "1T")
    assert r.returncode == EXIT_UPSTREAM, r.stderr
    data = json.loads(r.stdout)
    assert [u["host"] for u in data["unreachable"]] == ["nvidia.invalid"]
    known = sum(len(upstream.files[rel]) for rel in (CUDA, DOCKER, SCRIPT))
    assert data["total_bytes"] == known and data["total_is_lower_bound"] is True
    assert data["media"]["fits"] is None
    assert not any("fits" in line for line in data["media"]["lines"])
    assert "cannot tell: 1 size unknown" in data["media"]["lines"][0]
    assert "nvidia.invalid" in data["media"]["lines"][0]


def test_no_head_keeps_models_in_the_table_and_media_cannot_tell(upstream: Upstream, tmp_path: Path) -> None:
    manifest = upstream.manifest(tmp_path, models=MODEL)
    r = run_airgap("plan", str(manifest), "--no-head", "--media", "1T")
    assert r.returncode == EXIT_OK, r.stdout + r.stderr
    assert "Qwen--Qwen2.5-7B-Instruct" in r.stdout
    media = [line for line in r.stdout.splitlines() if line.startswith("media ")]
    assert len(media) == 1 and "cannot tell" in media[0], r.stdout
    assert "fits" not in media[0], media[0]
    assert "0 B" not in total_line(r.stdout)
    assert not upstream.server.requests  # --no-head: no server was asked


def test_no_head_json(upstream: Upstream, tmp_path: Path) -> None:
    manifest = upstream.manifest(tmp_path, models=MODEL)
    r = run_airgap("plan", str(manifest), "--no-head", "--media", "1T", "--json")
    assert r.returncode == EXIT_OK, r.stderr
    data = json.loads(r.stdout)
    models = [row for row in data["rows"] if row["layer"] == "models"]
    assert [(m["path"].rsplit("/", 1)[-1], m["size"]) for m in models] == [("Qwen--Qwen2.5-7B-Instruct", None)]
    assert data["unknown_size"] == len(data["rows"]) - sum(1 for row in data["rows"] if row["size"] is not None)
    assert data["unknown_size"] >= 1 and data["total_is_lower_bound"] is True
    assert data["media"]["fits"] is None and data["unreachable"] == []
    assert all(
        row["size_estimated"] is (row["size"] is not None and row["layer"] in ("driver", "cuda"))
        for row in data["rows"]
    )


def test_reachable_upstream_still_exits_0(upstream: Upstream, tmp_path: Path) -> None:
    r = run_airgap("plan", str(upstream.manifest(tmp_path)), "--json", "--media", "1T")
    assert r.returncode == EXIT_OK, r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is True and data["unreachable"] == [] and data["unknown_size"] == 0
    assert data["total_is_lower_bound"] is False and data["estimated_size"] == 0
    assert data["media"]["fits"] is True
    text = run_airgap("plan", str(upstream.manifest(tmp_path)), "--media", "1T")
    assert text.returncode == EXIT_OK, text.stderr
    assert "cannot reach" not in text.stderr
    assert "media 931.3 GiB (1000 GB): fits: 8.0 MiB" in text.stdout


def row(size: int | None, estimated: bool = False) -> PlanRow:
    return PlanRow("cuda", "layers/03-cuda/x.run", "u", "u", size, "d", size_estimated=estimated)


def test_estimates_are_marked_and_unknowns_never_fit() -> None:
    assert total_text(3 << 20, 0, 0) == "3.0 MiB"
    assert total_text(0, 4, 0) == "unknown (4 sizes unknown)"
    assert total_text(3 << 20, 2, 0) == "at least 3.0 MiB (2 sizes unknown)"
    assert total_text(3 << 20, 0, 1) == "~3.0 MiB (1 size estimated)"
    estimated = media_verdict([row(3 << 20, estimated=True)], 10**12, None)
    assert estimated.fits is True and "fits by estimate: ~3.0 MiB" in estimated.lines()[0]
    unknown = media_verdict([row(3 << 20), row(None)], 10**12, None)
    assert unknown.fits is None and "cannot tell: 1 size unknown" in unknown.lines()[0]
    assert "fits" not in unknown.lines()[0]
    too_big = media_verdict([row(3 << 20), row(None)], 1 << 20, None)
    assert too_big.fits is False and "does NOT fit" in too_big.lines()[0]


def test_every_unreachable_upstream_is_named_not_only_the_first(upstream: Upstream, tmp_path: Path) -> None:
    """A Python index and an image registry that cannot be reached are both named (each with its layer),
    besides the unreachable download hosts, and plan still prints what it knows before exiting 3."""
    dead_index, dead_registry = closed_port(), closed_port()
    extra = (
        "python:\n"
        "  requirements: [agapp]\n"
        f"  index_urls: [http://127.0.0.1:{dead_index}/simple]\n"
        "images: [example.org/team/app:1.0]\n"
        f"insecure_registries: [127.0.0.1:{dead_registry}]\n"
    )
    manifest = upstream.manifest(tmp_path, extra=extra)
    text = manifest.read_text().replace(
        "mirrors:\n", f"mirrors:\n  https://example.org: http://127.0.0.1:{dead_registry}\n"
    )
    manifest.write_text(text)
    r = run_airgap("plan", str(manifest), "--json")
    assert r.returncode == EXIT_UPSTREAM, r.stdout + r.stderr
    data = json.loads(r.stdout)
    failed = {f["layer"]: f["error"] for f in data["layer_failures"]}
    assert set(failed) == {"python", "images"}, failed
    assert f"127.0.0.1:{dead_index}" in failed["python"] and f"127.0.0.1:{dead_registry}" in failed["images"]
    assert all("connection refused" in e for e in failed.values()), failed
    assert not data["ok"] and "Traceback" not in r.stderr
    # The layers that could be planned are still in the table.
    assert {row["layer"] for row in data["rows"]} >= {"driver", "cuda", "docker", "files"}
