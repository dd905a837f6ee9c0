"""Real makeself installers and a real Docker static tgz, standing in for NVIDIA's and Docker's downloads.

The `.run` files are genuine makeself archives (integrity-checked, self-extracting). Their setup scripts
accept the options NVIDIA's installers document, reject unknown ones, refuse to run without --silent (no
terminal on an unattended install), and install stub `nvidia-smi`/`nvcc` under $AIRGAP_ROOT, never under /.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
import textwrap
from pathlib import Path

# makeself 2.4 prints its help for an option it does not know; NVIDIA's wrapper passes such options to
# the installer inside. Rewrite that branch, keeping the line count (makeself finds its payload by lines).
_MAKESELF_REJECT = b'\techo Unrecognized flag : "$1" >&2\n\tMS_Help\n\texit 1\n'
_MAKESELF_PASS = b"\tbreak\n\t:\n\t:\n"

_GUARD = """
root="${AIRGAP_ROOT:-/}"
if [ "$root" = "/" ]; then
  echo "test stand-in installer: refusing to install into / (set AIRGAP_ROOT)" >&2; exit 3
fi
"""


def _makeself(src: Path, out: Path, label: str) -> Path:
    subprocess.run(
        ["makeself", "--nox11", "--quiet", str(src), str(out), label, "./install.sh"], check=True, capture_output=True
    )
    data = out.read_bytes()
    assert _MAKESELF_REJECT in data, "makeself header changed: update tests/installers.py"
    out.write_bytes(data.replace(_MAKESELF_REJECT, _MAKESELF_PASS, 1))
    return out


def make_driver_run(workdir: Path, version: str, exit_code: int = 0) -> Path:
    src = workdir / f"driver-src-{version}"
    src.mkdir(parents=True)
    (src / "install.sh").write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        # Stand-in for nvidia-installer {version}: same options, stub nvidia-smi.
        silent=0; dkms=0; log=/var/log/nvidia-installer.log
        for a in "$@"; do
          case "$a" in
            --silent|-s) silent=1 ;;
            --dkms) dkms=1 ;;
            --no-dkms|--no-x-check|--no-opengl-files|--no-drm|--disable-nouveau|--rebuild-initramfs) ;;
            --log-file-name=*) log="${{a#*=}}" ;;
            --tmpdir=*|--kernel-source-path=*|--kernel-name=*|--kernel-module-type=*) ;;
            *) echo "ERROR: Unrecognized option: '$a'" >&2; exit 2 ;;
          esac
        done
        [ "$silent" = 1 ] || {{ echo "ERROR: no terminal: run with --silent" >&2; exit 2; }}
        __GUARD__
        mkdir -p "$(dirname "$log")" "$root/usr/bin" "$root/proc/driver/nvidia"
        echo "nvidia-installer {version}: dkms=$dkms" >> "$log"
        if [ {exit_code} -ne 0 ]; then echo "ERROR: Unable to build the kernel module." >&2; exit {exit_code}; fi
        cat > "$root/usr/bin/nvidia-smi" <<'EOF'
        #!/bin/sh
        case "$*" in
          *driver_version*) echo "{version}" ;;
          *) echo "NVIDIA-SMI {version}   Driver Version: {version}   CUDA Version: 12.4" ;;
        esac
        EOF
        chmod 755 "$root/usr/bin/nvidia-smi"
        echo "Installation of the NVIDIA Accelerated Graphics Driver (version: {version}) is now complete."
        """).replace("__GUARD__", _GUARD)
    )
    (src / "install.sh").chmod(0o755)
    return _makeself(src, workdir / f"NVIDIA-Linux-x86_64-{version}.run", f"NVIDIA driver {version}")


def make_cuda_run(workdir: Path, version: str, driver: str) -> Path:
    short = ".".join(version.split(".")[:2])
    src = workdir / f"cuda-src-{version}"
    src.mkdir(parents=True)
    (src / "install.sh").write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        # Stand-in for the CUDA {version} runfile installer: same options, stub nvcc.
        silent=0; toolkit=0; path=/usr/local/cuda-{short}
        for a in "$@"; do
          case "$a" in
            --silent) silent=1 ;;
            --toolkit) toolkit=1 ;;
            --toolkitpath=*) path="${{a#*=}}" ;;
            --tmpdir=*) [ -d "${{a#*=}}" ] || {{ echo "tmpdir ${{a#*=}} does not exist" >&2; exit 2; }} ;;
            --override|--no-opengl-libs|--no-man-page|--no-drm|--driver|--samples) ;;
            *) echo "Unknown option: $a" >&2; exit 2 ;;
          esac
        done
        [ "$silent" = 1 ] || {{ echo "needs --silent for an unattended install" >&2; exit 2; }}
        __GUARD__
        case "$path" in "$root"/*) ;; *) echo "refusing $path outside $root" >&2; exit 3 ;; esac
        if [ -n "$AIRGAP_TEST_CUDA_SLEEP" ]; then sleep "$AIRGAP_TEST_CUDA_SLEEP"; fi
        [ "$toolkit" = 1 ] || exit 0
        mkdir -p "$path/bin" "$path/lib64"
        cat > "$path/bin/nvcc" <<'EOF'
        #!/bin/sh
        echo "nvcc: NVIDIA (R) Cuda compiler driver"
        echo "Cuda compilation tools, release {short}, V{version}"
        EOF
        chmod 755 "$path/bin/nvcc"
        echo "Toolkit: Installed in $path"
        """).replace("__GUARD__", _GUARD)
    )
    (src / "install.sh").chmod(0o755)
    return _makeself(src, workdir / f"cuda_{version}_{driver}_linux.run", f"CUDA {version}")


DOCKER_BINARIES = (
    "dockerd",
    "docker",
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
    "runc",
    "docker-init",
    "docker-proxy",
)


def dockerd_version() -> str:
    """The version of the dockerd the tgz will hold (Debian's docker.io: e.g. 20.10.24+dfsg1 -> 20.10.24)."""
    out = subprocess.run([_which("dockerd"), "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("version ", 1)[1].split("+", 1)[0].split(",", 1)[0].strip()


def _which(name: str) -> str:
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/libexec/docker"):
        if Path(d, name).is_file():
            return str(Path(d, name))
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name}: install Debian's docker.io (scripts/test.sh does)")
    return found


def make_docker_tgz(workdir: Path, version: str) -> Path:
    """docker-VERSION.tgz laid out like Docker's static release (docker/<binary>), from Debian's binaries."""
    out = workdir / f"docker-{version}.tgz"
    with tarfile.open(out, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("docker")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for name in DOCKER_BINARIES:
            # The client must match the daemon's API: take the docker.io package's client, not /usr/local's.
            path = "/usr/bin/docker" if name == "docker" and Path("/usr/bin/docker").exists() else _which(name)
            data = Path(path).read_bytes()
            member = tarfile.TarInfo(f"docker/{name}")
            member.size, member.mode = len(data), 0o755
            tar.addfile(member, io.BytesIO(data))
    return out


def make_evil_tgz(workdir: Path) -> Path:
    out = workdir / "docker-99.0.0.tgz"
    with tarfile.open(out, "w:gz") as tar:
        data = b"owned\n"
        member = tarfile.TarInfo("docker/../../etc/cron.d/evil")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    return out


DRIVER_VERSION, CUDA_VERSION, CUDA_DRIVER = "550.90.07", "12.4.0", "550.54.14"


def publish_nvidia(up: Path, driver_exit: int = 0) -> Path:
    """NVIDIA's download trees under `up`, as mirrors of us.download.nvidia.com (`nvidia-us/`) and
    developer.download.nvidia.com (`nvidia-dev/`) serve them: the driver .run, the CUDA runfile and the
    md5sum.txt that lists it. Called again, it publishes a new build of the runfile (other bytes, new md5).
    Returns the runfile's path."""
    drv = up / f"nvidia-us/XFree86/Linux-x86_64/{DRIVER_VERSION}"
    cud = up / f"nvidia-dev/compute/cuda/{CUDA_VERSION}/local_installers"
    sidebar = up / f"nvidia-dev/compute/cuda/{CUDA_VERSION}/docs/sidebar/md5sum.txt"
    for d in (drv, cud, sidebar.parent):
        d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if not any(drv.iterdir()):
            shutil.move(make_driver_run(Path(tmp), DRIVER_VERSION, driver_exit), drv)
        run = make_cuda_run(Path(tmp), CUDA_VERSION, CUDA_DRIVER)
        cuda = cud / run.name
        shutil.move(run, cuda)
    sidebar.write_text(f"{hashlib.md5(cuda.read_bytes()).hexdigest()}  local_installers/{cuda.name}\n")
    return cuda


def nvidia_mirrors(server_url: str) -> str:
    """The manifest's `mirrors:` entries (indented) that send NVIDIA's URLs to `publish_nvidia`'s trees."""
    return (
        f"  https://us.download.nvidia.com: {server_url}/nvidia-us\n"
        f"  https://developer.download.nvidia.com: {server_url}/nvidia-dev\n"
    )
