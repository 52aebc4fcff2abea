"""Certificates made at test time with the openssl command: a CA, a server certificate for
127.0.0.1 it signed, a client certificate it signed, and a stranger CA with a client
certificate of its own (one the server does not trust)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.skips import skip_or_fail


@dataclass(frozen=True)
class Pki:
    folder: Path

    def path(self, name: str) -> str:
        """``ca.pem``, ``server.pem``/``.key``, ``client.pem``/``.key``,
        ``stranger-ca.pem``, ``stranger.pem``/``.key``."""
        return str(self.folder / name)

    def text(self, name: str) -> str:
        return (self.folder / name).read_text()

    def server_context(self, require_client_cert: bool = True) -> ssl.SSLContext:
        """A server's context: its certificate, client certificates checked against the CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.path("ca.pem"))
        context.load_cert_chain(self.path("server.pem"), self.path("server.key"))
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
        return context


def make_pki(folder: Path) -> Pki:
    if shutil.which("openssl") is None:
        skip_or_fail("openssl", "the openssl command makes the test certificates")
    _ca(folder, "ca", "relay test CA")
    _signed(folder, "server", "127.0.0.1", "ca", "subjectAltName=IP:127.0.0.1")
    _signed(folder, "client", "relay", "ca", "extendedKeyUsage=clientAuth")
    _ca(folder, "stranger-ca", "stranger CA")
    _signed(folder, "stranger", "relay", "stranger-ca", "extendedKeyUsage=clientAuth")
    return Pki(folder)


def _ca(folder: Path, name: str, subject: str) -> None:
    _openssl(
        folder,
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-subj", f"/CN={subject}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
    )  # fmt: skip


def _signed(folder: Path, name: str, subject: str, ca: str, extension: str) -> None:
    _openssl(
        folder,
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", f"/CN={subject}", "-keyout", f"{name}.key", "-out", f"{name}.csr",
    )  # fmt: skip
    (folder / f"{name}.ext").write_text(extension + "\n")
    _openssl(
        folder,
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
    )  # fmt: skip


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)
