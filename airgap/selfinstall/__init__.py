"""Self-install: airgap itself travels in the bundle, for the target's python and arch.

The server has no airgap and no network, so the bundle carries `tool/` (airgap's own wheel, every
dependency as a wheel for the target's python and arch, and the `pip` wheel, so the server needs no pip)
and `install.sh`, which checks `tool/` against SHA256SUMS, makes a venv with the server's python3, installs
airgap from `tool/` and runs `airgap install` with the same arguments.

- `own_wheel`: airgap's own wheel, written by hand from the package directory that is running.
- `imports`: the imports of airgap's code, so a dependency its metadata forgot fails here, not on the server.
- `tool`: `tool/` itself: pip downloads for the target, the closure walked again with the target's markers
  (airgap.wheels), every wheel checked against the target's tags, renamed into place at the end.
- `install_sh`: the POSIX sh bootstrap.
"""
