"""Version facts about NVIDIA's stack, kept as readable tables in one place with their sources."""

from __future__ import annotations

# CUDA toolkit release -> the driver bundled in its runfile, which is part of the runfile's name
# (cuda_<ver>_<driver>_linux.run). Source: the download links NVIDIA publishes per release, as collected
# in Jimver/cuda-toolkit src/links/linux-links.ts; cross-checked with shared/FACTS.md.
CUDA_RUNFILE_DRIVER: dict[str, str] = {
    "11.8.0": "520.61.05",
    "12.0.0": "525.60.13",
    "12.0.1": "525.85.12",
    "12.1.0": "530.30.02",
    "12.1.1": "530.30.02",
    "12.2.0": "535.54.03",
    "12.2.1": "535.86.10",
    "12.2.2": "535.104.05",
    "12.3.0": "545.23.06",
    "12.3.1": "545.23.08",
    "12.3.2": "545.23.08",
    "12.4.0": "550.54.14",
    "12.4.1": "550.54.15",
    "12.5.0": "555.42.02",
    "12.5.1": "555.42.06",
    "12.6.0": "560.28.03",
    "12.6.1": "560.35.03",
    "12.6.2": "560.35.03",
    "12.6.3": "560.35.05",
    "12.8.0": "570.86.10",
}


def cuda_runfile_driver(cuda_version: str) -> str | None:
    """The driver version inside CUDA's runfile name, or None for a release not in the table."""
    return CUDA_RUNFILE_DRIVER.get(cuda_version)
