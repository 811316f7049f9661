"""TLS and mutual TLS on the gRPC port, with certificates re-read without a restart.

gRPC asks for the certificate configuration at each new handshake; bertserve answers with new
files when they changed on disk or a SIGHUP asked for them, and with "no change" otherwise. New
connections get the new certificate; connections already open keep theirs and are not dropped.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["CertificateFiles", "RotatingCredentials", "certificate_problem"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CertificateFiles:
    """PEM files: the server's certificate chain and key, and the CA that client certificates
    must be signed by (None: clients are not asked for one)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.cert_file, self.key_file) + ((self.client_ca_file,) if self.client_ca_file else ())


def certificate_problem(files: CertificateFiles) -> str | None:
    """What is wrong with the files, as OpenSSL reads them (Python's ssl): a certificate file
    without a certificate, a key that is not an unencrypted PEM key, a key that is not the
    certificate's, a client CA file without a certificate; None when they serve. gRPC itself says
    only that it could not bind, or refuses a rotation in its own log alone."""

    def has_certificates(path: Path) -> bool:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
        except ssl.SSLError:
            return False
        return True

    if not has_certificates(files.cert_file):
        return f"cert_file {str(files.cert_file)!r} holds no PEM certificate"
    try:
        # No passphrase: gRPC cannot use an encrypted key (and OpenSSL must not prompt for one).
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(files.cert_file, files.key_file, password=b"")
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            return f"key_file {str(files.key_file)!r} is not the key of the certificate in {str(files.cert_file)!r}"
        return f"key_file {str(files.key_file)!r} holds no unencrypted PEM private key"
    if files.client_ca_file is not None and not has_certificates(files.client_ca_file):
        return f"client_ca_file {str(files.client_ca_file)!r} holds no PEM certificate"
    return None


class RotatingCredentials:
    """Server credentials whose certificates follow their files."""

    def __init__(self, files: CertificateFiles) -> None:
        self._files = files
        self._lock = threading.Lock()  # gRPC calls the fetcher from its own threads
        self._reload_requested = False
        self._stamp = self._stamp_of_files()
        self._initial = self._read()  # unreadable or mismatched files fail the start, here

    @property
    def mutual(self) -> bool:
        return self._files.client_ca_file is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self._fetch, require_client_authentication=self.mutual
        )

    def request_reload(self) -> None:
        """Re-read the files at the next handshake (SIGHUP), even if they look unchanged."""
        with self._lock:
            self._reload_requested = True

    def _stamp_of_files(self) -> tuple[tuple[int, int, int], ...]:
        stats = [os.stat(p) for p in self._files.paths]
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def _read(self) -> grpc.ServerCertificateConfiguration:
        files = self._files
        return grpc.ssl_server_certificate_configuration(
            [(files.key_file.read_bytes(), files.cert_file.read_bytes())],
            root_certificates=files.client_ca_file.read_bytes() if files.client_ca_file else None,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """None keeps the current certificates; a configuration replaces them for new connections."""
        with self._lock:
            try:
                stamp = self._stamp_of_files()
                if stamp == self._stamp and not self._reload_requested:
                    return None
                problem = certificate_problem(self._files)
                config = None if problem else self._read()
            except OSError as e:  # half-written or missing files: keep serving the certificates in use
                log.error("cannot re-read the TLS files (%s); the certificates in use stay", e)
                self._reload_requested = False
                return None
            self._stamp, self._reload_requested = stamp, False  # refused files are told of once, not per handshake
            if problem:
                log.error("the new TLS files are refused: %s; the certificates in use stay", problem)
                return None
        log.info("TLS certificates re-read from %s", ", ".join(str(p) for p in self._files.paths))
        return config
