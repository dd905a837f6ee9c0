"""Model files that can run code when loaded.

A pickle (PyTorch's `.bin`/`.pt`/`.pth`/`.ckpt`, plain `.pkl`) is a program for Python's unpickler: its
GLOBAL / STACK_GLOBAL opcodes import any module.name and its REDUCE calls it, so `torch.load` of a hostile
file runs `os.system`. The scan here lists every global a pickle imports, by walking its opcodes
(`pickletools.genops`), without ever unpickling it. A torch zip checkpoint holds its pickle as
`<name>/data.pkl` (each `*.pkl` inside is scanned). safetensors files cannot run code; their header is
checked to parse (8-byte little-endian length, then that much JSON).

"Cleared", for `airgap install`: a pickle file is installed only when the model's manifest entry says
`allow_pickle: true` (recorded in the lock) AND the bundle's dossier (dossier/dossier.json, listed in
SHA256SUMS) holds a scan of a file with that path and sha256 that parsed. The reviewer reads the globals
the scan found and decides; airgap does not judge a global "safe".
"""

from __future__ import annotations

import json
import pickletools
import struct
import zipfile
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle")
# Globals that mean "this file runs a command or arbitrary code when loaded": called out, not just listed.
DANGEROUS_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "sys",
        "builtins",
        "__builtin__",
        "shutil",
        "socket",
        "runpy",
        "pty",
        "commands",
        "webbrowser",
        "importlib",
        "ctypes",
        "pickle",
        "_pickle",
        "code",
        "codeop",
    }
)
MAX_SAFETENSORS_HEADER = 100 << 20  # the format's own limit


def is_pickle_name(path: str) -> bool:
    return path.lower().endswith(PICKLE_SUFFIXES)


@dataclass
class PickleScan:
    globals: list[str] = field(default_factory=list)  # module.name, each once, in order of appearance
    error: str = ""  # why the scan could not finish ("" when it did)

    @property
    def dangerous(self) -> list[str]:
        return [g for g in self.globals if g.split(".", 1)[0] in DANGEROUS_MODULES]

    def to_dict(self) -> dict[str, Any]:
        return {"globals": self.globals, "dangerous": self.dangerous, "error": self.error, "parsed": not self.error}


_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
)


# torch's legacy (non-zip) format is five pickles back to back (magic number, protocol, system info, the
# object, the storage keys), then raw tensor bytes: what torch.load unpickles, and no more, is scanned.
MAX_PICKLES = 5


def _scan_stream(f: BinaryIO, found: dict[str, None]) -> None:
    """Every global of the pickles at the start of `f`, read op by op (never the whole file)."""
    recent: list[Any] = []  # what the last opcodes pushed, where known: STACK_GLOBAL takes two names from it
    memo: dict[int, Any] = {}
    for _ in range(MAX_PICKLES):
        for op, arg, _pos in pickletools.genops(f):
            if op.name in ("GLOBAL", "INST"):
                module, _, name = str(arg).partition(" ")
                found[f"{module}.{name}"] = None
                recent.append(None)
            elif op.name == "STACK_GLOBAL":
                if len(recent) >= 2 and all(isinstance(x, str) for x in recent[-2:]):
                    found[f"{recent[-2]}.{recent[-1]}"] = None
                else:
                    found["<STACK_GLOBAL with names built at load time>"] = None
                recent = [*recent[:-2], None]
            elif isinstance(arg, str) and op.name in _STRING_OPS:
                recent.append(arg)
            elif op.name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(str(arg))] = recent[-1] if recent else None
            elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                recent.append(memo.get(int(str(arg))))  # a memoised name used again (torch does this)
            else:
                recent.append(None)
            recent = recent[-4:]
        here = f.tell()
        if f.read(1) != b"\x80":  # not another pickle (protocol 2+ starts with PROTO): done
            break
        f.seek(here)


def scan_pickle(f: BinaryIO) -> PickleScan:
    """The globals a pickle file imports: a plain pickle (or torch's legacy format), or a torch zip checkpoint
    (each `*.pkl` inside). `f` must be seekable; only the pickles are read, not the tensor data after them."""
    found: dict[str, None] = {}
    try:
        if f.read(4) == b"PK\x03\x04":
            f.seek(0)
            with zipfile.ZipFile(f) as z:
                pkls = [n for n in z.namelist() if n.endswith(".pkl")]
                if not pkls:
                    return PickleScan([], "a zip archive without any .pkl inside: not a torch checkpoint")
                for n in pkls:
                    with z.open(n) as member:
                        _scan_stream(cast(BinaryIO, member), found)
        else:
            f.seek(0)
            _scan_stream(f, found)
    except (ValueError, EOFError, zipfile.BadZipFile, struct.error, KeyError, OSError) as exc:
        return PickleScan(list(found), f"not a pickle airgap can read to the end ({type(exc).__name__}: {exc})")
    return PickleScan(list(found))


@dataclass
class SafetensorsCheck:
    tensors: int = 0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"tensors": self.tensors, "parsed": not self.error, "error": self.error}


def check_safetensors(f: BinaryIO, size: int) -> SafetensorsCheck:
    head = f.read(8)
    if len(head) < 8:
        return SafetensorsCheck(0, "shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_SAFETENSORS_HEADER or n + 8 > size:
        return SafetensorsCheck(0, f"header length {n} does not fit the file ({size} bytes)")
    try:
        header = json.loads(f.read(n))
    except ValueError as exc:
        return SafetensorsCheck(0, f"header is not JSON ({exc})")
    if not isinstance(header, dict):
        return SafetensorsCheck(0, "header is not a JSON object")
    return SafetensorsCheck(sum(1 for k in header if k != "__metadata__"))
