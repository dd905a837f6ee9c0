"""The target: one answer for every fact about the server (arch names, glibc, wheel tags, markers)."""

from __future__ import annotations

import pytest
from packaging.markers import Marker
from packaging.tags import Tag

from airgap import manifest as manifest_mod
from airgap.errors import BadInputError
from airgap.target import Target, arch_of, glibc_of, platform_tags


def test_platform_tags_are_pips_for_a_glibc_235_x86_64_server() -> None:
    # What `packaging.tags` gives pip running on such a server: every manylinux_2_N down to 2.5, each legacy
    # alias right after the manylinux_2_N it stands for, and linux_x86_64 last (the PyTorch index's wheels).
    ladder = [f"manylinux_2_{n}_x86_64" for n in range(35, 4, -1)]
    for after, alias in (("manylinux_2_17_x86_64", "manylinux2014"), ("manylinux_2_12_x86_64", "manylinux2010")):
        ladder.insert(ladder.index(after) + 1, f"{alias}_x86_64")
    assert platform_tags("amd64", "2.35") == [*ladder, "manylinux1_x86_64", "linux_x86_64"]
    assert platform_tags("amd64", "2.35", manylinux_only=True) == [*ladder, "manylinux1_x86_64"]


def test_platform_tags_for_arm64_start_at_manylinux2014() -> None:
    arm = platform_tags("arm64", "2.31")
    assert arm[0] == "manylinux_2_31_aarch64" and arm[-2:] == ["manylinux2014_aarch64", "linux_aarch64"]
    assert "manylinux_2_16_aarch64" not in arm and platform_tags("aarch64", "2.31") == arm


def test_one_arch_map_for_every_tool() -> None:
    amd, arm = arch_of("amd64"), arch_of("aarch64")
    assert (amd.machine, amd.oci, amd.cuda_repo, amd.driver_dir) == ("x86_64", "linux/amd64", "x86_64", "Linux-x86_64")
    assert (arm.debian, arm.oci, arm.cuda_repo, arm.driver_dir) == ("arm64", "linux/arm64", "sbsa", "aarch64")
    with pytest.raises(BadInputError):
        arch_of("ppc64le")


def test_glibc_from_the_release_or_the_python_section() -> None:
    assert glibc_of("ubuntu-22.04") == "2.35" and glibc_of("debian-12") == "2.36"
    assert glibc_of("rhel-9") == glibc_of("rocky-9.4") == "2.34" and glibc_of("almalinux-8") == "2.28"
    assert glibc_of("ubuntu-18.04") is None
    m = manifest_mod.loads(
        'name: t\ntarget: {os: debian-12, arch: arm64, python: "3.11"}\npython: {requirements: [numpy]}\n'
    )
    t = Target.of(m)
    assert (t.os, t.arch, t.python, t.glibc, t.machine) == ("debian-12", "arm64", "3.11", "2.36", "aarch64")
    m = manifest_mod.loads(
        "name: t\ntarget: {os: ubuntu-18.04}\n"
        'python: {requirements: [numpy], glibc: "2.27", platforms: [linux_x86_64]}\n'
    )
    assert Target.of(m).glibc == "2.27" and Target.of(m).platform_tags() == ["linux_x86_64"]


def test_unknown_glibc_without_platforms_is_bad_input() -> None:
    with pytest.raises(BadInputError, match="glibc"):
        Target("3.10", "amd64", os="ubuntu-18.04").platform_tags()


def test_wheel_tags_are_the_interpreter_times_the_platforms() -> None:
    tags = Target("3.10", "amd64", "2.35").wheel_tags()
    assert tags[0] == Tag("cp310", "cp310", "manylinux_2_35_x86_64")
    for t in ("cp310-abi3-manylinux2014_x86_64", "cp39-abi3-linux_x86_64", "py3-none-any", "cp310-none-any"):
        assert Tag(*t.split("-")) in tags
    assert Tag("cp311", "cp311", "manylinux_2_17_x86_64") not in tags


def test_markers_are_judged_for_the_target_not_this_python() -> None:
    old = Target("3.10", "amd64")
    assert old.wants(Marker('python_version < "3.11"')) and not Target("3.11", "amd64").wants(
        Marker('python_version < "3.11"')
    )
    assert Target("3.12", "arm64").wants(Marker('platform_machine == "aarch64"'))
    assert not old.wants(Marker('platform_machine == "aarch64"'))
    assert not old.wants(Marker('extra == "test"')) and old.wants(Marker('extra == "test"'), ["", "test"])
    # The patch release is unknown: either end of it keeps a requirement.
    assert old.wants(Marker('python_full_version >= "3.10.5"')) and old.wants(Marker('python_full_version < "3.10.1"'))
