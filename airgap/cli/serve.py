"""`airgap serve`: a closed network's Python index, Hugging Face endpoint and file server, from one bundle."""

from __future__ import annotations

from pathlib import Path

import click

from airgap.bundle_layout import TRUSTED_KEYS_DIR
from airgap.cli.application import Application, exit_codes_help
from airgap.cli.options import trust_options
from airgap.errors import EXIT_OK, BadInputError


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `PORT` -> (host, port); BadInputError naming --listen otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise BadInputError(
            f"--listen {value}: the port must be a number from 0 to 65535.",
            "Write it as HOST:PORT, e.g. --listen 127.0.0.1:8080 (0.0.0.0:8080 to serve the closed network).",
        )
    return host, int(port)


@click.command(
    epilog=exit_codes_help(),
    help=f"""Serve BUNDLE to the closed network: a Python index, a Hugging Face endpoint and its files.

The bundle is verified first, as `airgap verify` does (signature policy from --trusted-keys, default
{TRUSTED_KEYS_DIR}, and --key; every file's sha256); a bundle that fails is not served (exit 1). Then, read-only:

\b
  /simple/                Python index (PEP 503 HTML, PEP 691 JSON), wheels with sha256
  /api/models/, /{{repo}}/resolve/...   the Hugging Face hub's API for the bundle's models
  /files/                 the manifest's files, and /files/SHA256SUMS

Every file sent whole is hashed on the way; a file changed since verification is refused. One access log
line per request goes to stderr. The default address is this host only; --listen 0.0.0.0:8080 serves the
closed network (put TLS in front, or give --tls-cert/--tls-key). Ctrl-C stops it.

\b
On a server of the closed network:
  pip install --index-url http://DEPOT:8080/simple/ vllm
  HF_ENDPOINT=http://DEPOT:8080 hf download ORG/MODEL --revision REV
  curl -fO http://DEPOT:8080/files/check.sh

\b
  airgap serve /srv/bundle
  airgap serve /srv/bundle --listen 0.0.0.0:8080 --key site-a.pub""",
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to listen on; port 0 picks a free one (the URL is printed).",
)
@trust_options
@click.option("--tls-cert", type=click.Path(path_type=Path), help="Serve HTTPS with this certificate (PEM).")
@click.option("--tls-key", type=click.Path(path_type=Path), help="The certificate's private key (PEM).")
@click.pass_obj
def serve(
    app: Application,
    bundle: Path,
    listen: str,
    key: Path | None,
    trusted_dir: Path,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> int:
    import ssl

    from airgap.cli.options import refuse_manifest, trusted
    from airgap.depot.content import verified_bundle
    from airgap.depot.server import Depot, DepotHTTPServer, tls_context
    from airgap.depot.server import serve as run_server
    from airgap.signals import stops_raise

    out = app.output()
    refuse_manifest(bundle, "serve")
    host, port = parse_listen(listen)
    tls = None
    if (tls_cert is None) != (tls_key is None):
        raise BadInputError(
            "--tls-cert and --tls-key go together: one was given without the other.",
            "Give both (the certificate and its private key, PEM), or neither for plain HTTP.",
        )
    if tls_cert is not None and tls_key is not None:
        try:
            tls = tls_context(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise BadInputError(
                f"--tls-cert {tls_cert} / --tls-key {tls_key}: cannot load them ({exc}).",
                "Give a PEM certificate and the PEM private key that belongs to it.",
            ) from None
    keys = trusted(trusted_dir, key)
    reader = verified_bundle(bundle, keys, keys_dir=str(trusted_dir), say=out.info, warn=out.warn)
    depot = Depot.of(reader)

    def ready(httpd: DepotHTTPServer) -> None:
        for line in depot.summary():
            out.info(f"  {line}")
        out.info(f"serving {bundle} on {httpd.url}/ (read-only; Ctrl-C stops)")

    try:
        with stops_raise():
            run_server(depot, host, port, tls=tls, ready=ready)
    except OSError as exc:
        raise BadInputError(
            f"--listen {listen}: cannot listen there ({exc.strerror}).",
            "Choose another port (one above 1023 needs no root), or stop what listens there.",
        ) from None
    except KeyboardInterrupt:
        out.info("stopped.")
    return EXIT_OK
