"""Names on disk that every part of airgap agrees on."""

from __future__ import annotations

# Install order (docs/architecture.md). The number in `layers/NN-<layer>/` comes from here, so a layer keeps its
# directory whatever else the manifest asks for, and `ls layers/` reads in install order.
LAYER_ORDER: tuple[str, ...] = (
    "prereqs",
    "driver",
    "cuda",
    "cudnn",
    "docker",
    "container_toolkit",
    "images",
    "python",
    "models",
    "files",
    "depot",
)

LOCK_NAME = "airgap.lock.json"
SUMS_NAME = "SHA256SUMS"
SIG_NAME = "SHA256SUMS.sig"
README_NAME = "README.txt"
LAYERS_DIR = "layers"
TOOL_DIR = "tool"
PART_SUFFIX = ".part"
# The gate's dossier (airgap dossier): listed in SHA256SUMS, not in the lock, since it describes the lock.
DOSSIER_DIR = "dossier"
# Present while `airgap split` changes a bundle (with no SHA256SUMS): the record it resumes from.
SPLIT_MARKER_NAME = ".airgap-split.json"


def layer_dir(layer: str) -> str:
    return f"{LAYER_ORDER.index(layer) + 1:02d}-{layer}"


# SHA256SUMS of a bundle of a million files is about 100 MB; airgap refuses to read more than this.
MAX_SUMS_BYTES = 64 << 20

# A lock lists every artifact with a few hundred bytes each: even 100,000 artifacts stay far below this.
MAX_LOCK_BYTES = 256 << 20

# The server's trusted public keys (*.pub): with one there, a valid signature is required (docs/signing.md).
TRUSTED_KEYS_DIR = "/etc/airgap/keys"
