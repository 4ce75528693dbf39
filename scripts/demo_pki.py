"""Writes the demo's event-pipeline world into a work directory: a renewal whose intermediate rotated.

A synthetic root signs two intermediates named like Let's Encrypt's, R10 and R11; the certificate
`exch-hybrid-smtp` has an old version issued by R10 and a renewed one issued by R11. Every certificate
below the root names a CRL at `http://127.0.0.1:<port>/<ca>.crl`, and the CRLs are written to
`<work>/crl/` for a loopback HTTP server to serve (`scripts/demo.sh` starts one). Written:

    <work>/crl/root.crl, R10.crl, R11.crl         CRLs (DER), none revoking anything
    <work>/vault/exch-hybrid-smtp/<version>.pem   leaf + its intermediate, a Key Vault-like version id
    <work>/vault/exch-hybrid-smtp/certificate.json   created times (old before new) and tags
    <work>/targets.json                           the targets file (docs/targets.md): the worker group
    <work>/inventory.json                         what Exchange has (certsync.inventory/1): EX01 and EX02
                                                  with the old version, the connectors selecting it
    <work>/event.json                             an Event Grid CertificateNewVersionCreated delivery
    <work>/demo-root.pem                          the trust anchor, for --trust
    <work>/mailserver/                            the on-premises mail server's files for the STARTTLS
                                                  probe: new-leaf.pem, new-chain.pem (+ R11), new-key.pem

Apart from the mail server's own key (which the demo's loopback SMTP server needs, as a real Exchange
server holds its key; certsync never reads it), only public certificates and CRLs are written: every
CA key lives in this process's memory and dies with it. Dates are relative to now, so the world always validates. Run:
    .venv/bin/python scripts/demo_pki.py .demo --port 8080
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import uuid
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `shared`, when run as scripts/demo_pki.py

UTC = dt.timezone.utc
VAULT = "contoso-kv"
CERTIFICATE = "exch-hybrid-smtp"
SUBSCRIPTION = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"  # synthetic
RESOURCE_GROUP = "rg-exchange-hybrid"
WORKER_GROUP = "hrw-exchange"
SEND_CONNECTOR = "Outbound to Office 365 - 0b9d5c6e-3f51-4d2b-9a70-2f1c8e4b7a10"
OLD_HOSTS = ["mail.contoso.com", "autodiscover.contoso.com"]
NEW_HOSTS = ["mail.contoso.com", "autodiscover.contoso.com", "smtp.contoso.com"]  # the renewal adds smtp


def _name(**attrs: str) -> x509.Name:
    oids = {"C": NameOID.COUNTRY_NAME, "O": NameOID.ORGANIZATION_NAME, "CN": NameOID.COMMON_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs.items()])


class _Ca:
    """A CA held in memory: its certificate and key (never written), and the URL of its CRL."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, crl_url: str) -> None:
        self.cert, self.key, self.crl_url = cert, key, crl_url

    def crl(self, now: dt.datetime) -> bytes:
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - dt.timedelta(hours=1))
            .next_update(now + dt.timedelta(days=7))
            .add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return crl.public_bytes(serialization.Encoding.DER)


def _issue(
    subject: x509.Name,
    key,  # noqa: ANN001 - the subject's private key
    issuer: _Ca | None,
    start: dt.datetime,
    days: int,
    *,
    ca: bool,
    path_length: int | None = None,
    dns: tuple[str, ...] | list[str] = (),
) -> x509.Certificate:
    signer = issuer.key if issuer else key
    rsa_leaf = isinstance(key, rsa.RSAPrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=rsa_leaf and not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    )
    if issuer is not None:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(issuer.crl_url)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(work: Path, port: int, now: dt.datetime | None = None) -> dict:
    """Write the demo world into `work`; returns the vault, certificate and the two version ids."""
    now = (now or dt.datetime.now(UTC)).replace(microsecond=0)
    base = f"http://127.0.0.1:{port}"
    crl_dir, cert_dir = work / "crl", work / "vault" / CERTIFICATE
    crl_dir.mkdir(parents=True, exist_ok=True)
    cert_dir.mkdir(parents=True, exist_ok=True)

    root_key = ec.generate_private_key(ec.SECP384R1())
    root_name = _name(C="US", O="certsync demo", CN="certsync Demo Root X2")
    root_cert = _issue(root_name, root_key, None, now - dt.timedelta(days=400), 3650, ca=True)
    root = _Ca(root_cert, root_key, f"{base}/root.crl")
    cas = {"root": root}
    for cn in ("R10", "R11"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(
            _name(C="US", O="Let's Encrypt", CN=cn),
            key,
            root,
            now - dt.timedelta(days=300),
            1095,
            ca=True,
            path_length=0,
        )
        cas[cn] = _Ca(cert, key, f"{base}/{cn}.crl")

    # The old version was issued 62 days ago (Key Vault renews at about two thirds of a 90-day life);
    # the renewed one an hour ago. Version ids are 32 hex characters, like Key Vault's.
    versions = []
    for ca_name, start, hosts in (
        ("R10", now - dt.timedelta(days=62), OLD_HOSTS),
        ("R11", now - dt.timedelta(hours=1), NEW_HOSTS),
    ):
        ca = cas[ca_name]
        leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        leaf = _issue(_name(CN=hosts[0]), leaf_key, ca, start, 90, ca=False, dns=hosts)
        version = uuid.uuid4().hex
        (cert_dir / f"{version}.pem").write_bytes(_pem(leaf, ca.cert))
        versions.append(
            {
                "version": version,
                "issuer": ca_name,
                "created": start + dt.timedelta(minutes=5),
                "leaf": leaf,
                "key": leaf_key,
                "ca": ca.cert,
            }
        )
    old, new = versions
    _write_mail_server(work / "mailserver", new)

    for name, ca in cas.items():
        (crl_dir / f"{name}.crl").write_bytes(ca.crl(now))
    (work / "demo-root.pem").write_bytes(_pem(root_cert))

    meta = {
        "tags": {
            "certsync-worker-group": WORKER_GROUP,
            "certsync-hybrid": "true",
            "environment": "demo",
        },
        "created": {v["version"]: _stamp(v["created"]) for v in versions},
    }
    (cert_dir / "certificate.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    # The servers and connectors come from Exchange (the inventory); the targets name the worker group
    # and the host names to check the certificate against.
    targets = {
        "schema": "certsync.targets/1",
        "certificates": {CERTIFICATE: {"worker_group": WORKER_GROUP, "hosts": NEW_HOSTS}},
    }
    (work / "targets.json").write_text(json.dumps(targets, indent=2) + "\n", encoding="utf-8")
    inventory = _inventory(old["leaf"], now - dt.timedelta(minutes=10))
    (work / "inventory.json").write_text(json.dumps(inventory, indent=2) + "\n", encoding="utf-8")

    # Event Grid schema, as Key Vault delivers it: an array of events, data fields in PascalCase as in
    # Microsoft's example, NBF and EXP in Unix seconds.
    leaf = new["leaf"]
    event_time = new["created"] + dt.timedelta(seconds=2, microseconds=123456)
    event = {
        "id": str(uuid.uuid4()),
        "topic": (
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.KeyVault/vaults/{VAULT}"
        ),
        "subject": CERTIFICATE,
        "eventType": "Microsoft.KeyVault.CertificateNewVersionCreated",
        "eventTime": event_time.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
        "data": {
            "Id": f"https://{VAULT}.vault.azure.net/certificates/{CERTIFICATE}/{new['version']}",
            "VaultName": VAULT,
            "ObjectType": "Certificate",
            "ObjectName": CERTIFICATE,
            "Version": new["version"],
            "NBF": int(leaf.not_valid_before_utc.timestamp()),
            "EXP": int(leaf.not_valid_after_utc.timestamp()),
        },
        "dataVersion": "1",
        "metadataVersion": "1",
    }
    (work / "event.json").write_text(json.dumps([event], indent=2) + "\n", encoding="utf-8")
    return {"vault": VAULT, "certificate": CERTIFICATE, "old": old["version"], "new": new["version"]}


def _inventory(old: x509.Certificate, collected: dt.datetime) -> dict:
    """A two-server hybrid organisation as the discovery runbook reports it: both servers hold the old
    version (EX01 also for IMAP and POP), and the send connector, each Default Frontend receive connector
    and the hybrid configuration select it. Subject and Issuer as Exchange shows them (certsync's
    rendering: the name Windows prints)."""
    from shared.x509.certificate import Certificate

    cert = Certificate.from_der(old.public_bytes(serialization.Encoding.DER))
    value = f"<I>{cert.issuer}<S>{cert.subject}"
    servers = ["EX01", "EX02"]
    return {
        "schema": "certsync.inventory/1",
        "worker_group": WORKER_GROUP,
        "collected_at": _stamp(collected),
        "servers": [
            {"Name": s, "Fqdn": f"{s.lower()}.contoso.local", "ServerRole": "Mailbox", "IsEdgeServer": False,
             "InternalTransportCertificateThumbprint": (f"{n}E" * 20)[:40]}
            for n, s in enumerate(servers, 1)
        ],
        "certificates": [
            {"Server": s, "Thumbprint": cert.thumbprint, "Subject": str(cert.subject), "Issuer": str(cert.issuer),
             "Services": services, "Status": "Valid", "CertificateDomains": list(cert.dns_names)}
            for s, services in zip(servers, ("IMAP, POP, IIS, SMTP", "IIS, SMTP"), strict=True)
        ],
        "send_connectors": [
            {"Identity": SEND_CONNECTOR, "SourceTransportServers": servers, "TlsCertificateName": value}
        ],
        "receive_connectors": [
            {"Identity": f"{s}\\Default Frontend {s}", "Server": s, "TlsCertificateName": value} for s in servers
        ],
        "hybrid_configuration": {
            "SendingTransportServers": servers, "ReceivingTransportServers": servers, "TlsCertificateName": value,
        },
        "exo": {
            "inbound_connectors": [
                {"Identity": "Inbound from contoso", "ConnectorType": "OnPremises",
                 "TlsSenderCertificateName": "mail.contoso.com"}
            ],
            "outbound_connectors": [
                {"Identity": "Outbound to contoso", "ConnectorType": "OnPremises", "TlsSettings": "DomainValidation",
                 "TlsDomain": "mail.contoso.com"}
            ],
            "accepted_domains": [{"DomainName": "contoso.com"}],
        },
        "errors": [],
    }  # fmt: skip


def _write_mail_server(folder: Path, new: dict) -> None:
    """What the demo's on-premises mail server serves after the renewal, with and without R11."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "new-leaf.pem").write_bytes(_pem(new["leaf"]))
    (folder / "new-chain.pem").write_bytes(_pem(new["leaf"], new["ca"]))
    key = folder / "new-key.pem"
    key.touch(mode=0o600)
    key.chmod(0o600)
    key.write_bytes(
        new["key"].private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("work", type=Path, help="the work directory (created; e.g. .demo)")
    parser.add_argument("--port", type=int, required=True, help="the loopback port the CRLs are served on")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: give a TCP port, 1-65535")
    made = build(args.work, args.port)
    print(
        f"wrote {args.work}/: {made['vault']}/{made['certificate']} versions {made['old']} (R10) and "
        f"{made['new']} (R11), CRLs for root, R10 and R11 on http://127.0.0.1:{args.port}/, "
        "targets.json, event.json, demo-root.pem, mailserver/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
