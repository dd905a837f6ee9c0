"""A private nginx for tests and benchmarks: its own prefix, pid, logs and temp paths under WORK, in front."""

from __future__ import annotations

import os
from pathlib import Path


def write_nginx_conf(work: Path, http_lines: str) -> Path:
    """WORK/nginx.conf running nginx in the foreground with everything under WORK; `http_lines` go inside
    `http { }` (a `server` block, or an `include` of the one `airgap export` wrote)."""
    for d in ("logs", "tmp"):
        (work / d).mkdir(parents=True, exist_ok=True)
    # Run as root, nginx's workers would be www-data, which may not enter a 0700 temp directory.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = work / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {work}/nginx.pid;\nerror_log {work}/logs/error.log;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        f"  access_log {work}/logs/access.log;\n"
        f"  client_body_temp_path {work}/tmp/body;\n  proxy_temp_path {work}/tmp/proxy;\n"
        f"  fastcgi_temp_path {work}/tmp/fcgi;\n  uwsgi_temp_path {work}/tmp/uwsgi;\n"
        f"  scgi_temp_path {work}/tmp/scgi;\n"
        "  default_type application/octet-stream;\n"
        f"{http_lines}"
        "}\n"
    )
    return conf
