"""Helpers for the operations tests: a server in its own process with the environment a
container gives it, and certificates made on the spot."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from explainserve.cli.healthcheck import check
from support import ROOT, TESTS


def plain_environment(**extra: str) -> dict[str, str]:
    """What a container would have: a PATH with our interpreter first, HOME, and tests/ on
    the import path for the test models; none of the caller's other variables."""
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
           "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    env.update(extra)
    return env


class ServerProcess:
    """`command` started in its own process; `wait_serving` polls the gRPC health service."""

    def __init__(self, command: list[str], address: str, env: dict[str, str] | None = None,
                 log_path: Path | None = None) -> None:
        self.address = address
        self._log_path = log_path
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(command, cwd=ROOT, env=env or plain_environment(),
                                        stdout=self._log, stderr=subprocess.STDOUT)

    def wait_serving(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            if check(self.address, timeout=1.0) == "SERVING":
                return
            time.sleep(0.2)
        raise TimeoutError(f"server at {self.address} not SERVING after {timeout}s:\n{self.log()}")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def log(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path else ""

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self._log is not subprocess.DEVNULL:
            self._log.close()


@dataclass(frozen=True)
class Certificates:
    """PEM files: a CA, a server certificate for localhost/127.0.0.1 and a client certificate
    signed by it, and a client certificate signed by an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def make_certificates(folder: Path) -> Certificates:
    from cryptography.hazmat.primitives import serialization

    ca_key, ca_cert = _certificate("explainserve test CA", None, ca=True)
    server_key, server_cert = _certificate("localhost", (ca_key, ca_cert), server=True)
    client_key, client_cert = _certificate("test client", (ca_key, ca_cert))
    other_key, other_cert = _certificate("other CA", None, ca=True)
    stranger_key, stranger_cert = _certificate("stranger", (other_key, other_cert))

    def write(name: str, item) -> Path:
        path = folder / name
        if hasattr(item, "public_bytes") and not hasattr(item, "private_bytes"):
            path.write_bytes(item.public_bytes(serialization.Encoding.PEM))
        else:
            path.write_bytes(item.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        return path

    return Certificates(
        ca=write("ca.pem", ca_cert), server_cert=write("server.pem", server_cert),
        server_key=write("server.key", server_key), client_cert=write("client.pem", client_cert),
        client_key=write("client.key", client_key), stranger_cert=write("stranger.pem", stranger_cert),
        stranger_key=write("stranger.key", stranger_key),
    )


def _certificate(common_name: str, issuer, *, ca: bool = False, server: bool = False):
    """An EC P-256 key and a certificate for it, self-signed when `issuer` is None."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_key, issuer_cert = issuer if issuer else (key, None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer_cert.subject if issuer_cert else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=False, encipher_only=False, decipher_only=False),
            critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return key, builder.sign(issuer_key, hashes.SHA256())
