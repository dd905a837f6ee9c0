"""The README's first command ends in `airgap demo`: it must run offline, end to end, and exit 0."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_airgap


def test_demo_goes_collect_verify_install_smoke_and_shows_a_bad_transfer(tmp_path: Path) -> None:
    r = run_airgap("demo", "--workdir", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for heading in ("airgap collect", "airgap verify", "airgap install", "airgap smoke", "bad transfer"):
        assert heading in out
    assert "OK: 6 files" in out
    assert "driver   installed" in out and "cuda     installed" in out
    assert "run again: driver skipped, cuda skipped, docker skipped" in out
    assert "ALTERED    layers/03-cuda/cuda_12.4.0_550.54.14_linux.run" in out
    assert "Traceback" not in r.stderr
    server = tmp_path / "server-root"
    assert (server / "usr/local/cuda-12.4/bin/nvcc").exists()
    # The demo installs twice: one log per run, whether or not both runs fall in the same second.
    first, second = sorted((server / "var/log/airgap").glob("install-*.log"))
    assert "$ sh " in first.read_text()
    assert "$ sh " not in second.read_text()
    assert "warning" not in r.stderr
