"""The prod program under mocks, with the outputs the commands need computed for real.

The program is loaded exactly as the language host loads it (tests/support/program_harness.py). Where
a provider computes an output that ends up on a host, the mocks compute a real one: pulumi-tls
keys and certificates (a real CA and per-host certificates, the subject, SANs and uses the
component asks for) and pulumi-random passwords. Like the Pulumi state, `ProviderState` keeps
those outputs while a resource's inputs stay the same, so a second run yields the same values.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

import pulumi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cachelayer.config.stack_file import read_stack_config
from support.program_harness import FAKE_SECRETS, ProgramRun, RecordingMocks, run_program, unwrap

COMMAND = "command:remote:Command"
COPY_TO_REMOTE = "command:remote:CopyToRemote"


@dataclass
class CommandSpec:
    """One remote Command as the engine receives it: inputs (secrets unwrapped) and options."""

    name: str
    inputs: dict[str, Any] = field(repr=False)  # holds secrets: never in a traceback
    depends_on: list[str]  # other commands, directly or through non-command resources
    delete_before_replace: bool


@dataclass
class ProviderState:
    """Outputs computed for non-command resources, by name: {"inputs": hash, "outputs": {...}}."""

    resources: dict[str, dict[str, Any]] = field(default_factory=dict)


def _fingerprint(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(unwrap(inputs), sort_keys=True, default=str).encode()).hexdigest()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def _ec_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _name(subject: dict[str, Any]) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, subject["commonName"])]
    if subject.get("organization"):
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject["organization"]))
    return x509.Name(attributes)


def _certificate(
    subject: x509.Name,
    public_key: Any,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    inputs: dict[str, Any],
    sans: list[x509.GeneralName],
) -> str:
    """Signed the way pulumi-tls signs: validity, CA flag and allowed_uses as its provider maps them."""
    uses = set(inputs.get("allowedUses", []))
    now = datetime.datetime.now(datetime.UTC)
    is_ca = bool(inputs.get("isCaCertificate"))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=int(inputs["validityPeriodHours"])))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature="digital_signature" in uses,
                content_commitment=False,
                key_encipherment="key_encipherment" in uses,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign="cert_signing" in uses,
                crl_sign="crl_signing" in uses,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    extended = [
        oid
        for use, oid in (("server_auth", ExtendedKeyUsageOID.SERVER_AUTH), ("client_auth", ExtendedKeyUsageOID.CLIENT_AUTH))
        if use in uses
    ]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def compute_outputs(type_token: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """What the provider would return for `type_token` (the ones that matter on a host)."""
    if type_token == "tls:index/privateKey:PrivateKey":
        assert inputs["algorithm"] == "ECDSA" and inputs["ecdsaCurve"] == "P256", inputs
        new_key = ec.generate_private_key(ec.SECP256R1())
        public = new_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {"privateKeyPem": _key_pem(new_key), "publicKeyPem": public.decode()}
    if type_token == "tls:index/selfSignedCert:SelfSignedCert":
        ca_key = _ec_key(inputs["privateKeyPem"])
        name = _name(inputs["subject"])
        return {"certPem": _certificate(name, ca_key.public_key(), name, ca_key, inputs, [])}
    if type_token == "tls:index/certRequest:CertRequest":
        key = _ec_key(inputs["privateKeyPem"])
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in inputs.get("dnsNames", [])]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in inputs.get("ipAddresses", [])]
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(_name(inputs["subject"]))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256())
        )
        return {"certRequestPem": csr.public_bytes(serialization.Encoding.PEM).decode()}
    if type_token == "tls:index/locallySignedCert:LocallySignedCert":
        csr = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
        ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
        signer = _ec_key(inputs["caPrivateKeyPem"])
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return {"certPem": _certificate(csr.subject, csr.public_key(), ca_cert.subject, signer, inputs, list(san))}
    if type_token == "random:index/randomPassword:RandomPassword":
        alphabet = string.ascii_letters + string.digits
        length, digits = int(inputs["length"]), int(inputs.get("minNumeric", 0))
        while True:
            value = "".join(secrets.choice(alphabet) for _ in range(length))
            if sum(c.isdigit() for c in value) >= digits:
                return {"result": value}
    return {}


class RealOutputsMocks(RecordingMocks):
    def __init__(self, run: ProgramRun, provider_state: ProviderState) -> None:
        super().__init__(run)
        self.provider_state = provider_state

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        resource_id, state = super().new_resource(args)
        inputs = unwrap(dict(args.inputs))
        fingerprint = _fingerprint(inputs)
        known = self.provider_state.resources.get(args.name)
        if known is None or known["inputs"] != fingerprint:
            known = {"inputs": fingerprint, "outputs": compute_outputs(args.typ, inputs)}
            self.provider_state.resources[args.name] = known
        state.update(known["outputs"])
        return resource_id, state


def prod_config(
    machines: dict[str, str],
    host_key: str,
    redis: dict[str, Any] | None = None,
    hosts: dict[str, Any] | None = None,
    sentinel: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pulumi.prod.yaml as shipped, pointed at the booted hosts: the placeholder addresses, host
    keys and app network replaced, machines added for a scale-out, plus the scenario's overrides.
    The hosts boot from one image, so they present one host key."""
    shipped = read_stack_config("prod")
    listed = {m["name"]: m for m in shipped["hosts"]["machines"]}
    hosts_config = {
        **shipped["hosts"],
        "machines": [
            {**listed.get(name, {"name": name}), "address": address, "ssh_host_key": host_key}
            for name, address in machines.items()
        ],
        **(hosts or {}),
    }
    config: dict[str, Any] = {"redis": {**shipped["redis"], **(redis or {})}, "hosts": hosts_config}
    if sentinel is not None:
        config["sentinel"] = sentinel
    return config


def declared_commands(
    config: dict[str, Any], private_key: str, provider_state: ProviderState, secrets: dict[str, str] | None = None
) -> list[CommandSpec]:
    """Run the program for the prod stack with `config` (and secret settings such as passwords)
    and return its remote commands."""
    run = run_program(
        "prod",
        config_overrides=config,
        secrets={
            "ssh_private_key": private_key,
            "cloudflare_api_token": FAKE_SECRETS["cloudflare_api_token"],
            **(secrets or {}),
        },
        mocks_factory=lambda r: RealOutputsMocks(r, provider_state),
    )
    copies = run.of_type(COPY_TO_REMOTE)
    assert not copies, "CopyToRemote is not replayed yet: teach tests/rehearsal/engine.py to copy files"
    commands = {r.name for r in run.of_type(COMMAND)}

    def command_deps(name: str, seen: set[str]) -> set[str]:
        found: set[str] = set()
        for dep in run.depends_on.get(name, []):
            if dep in seen:
                continue
            seen.add(dep)
            found |= {dep} if dep in commands else command_deps(dep, seen)
        return found

    return [
        CommandSpec(
            r.name,
            unwrap(r.inputs),
            sorted(command_deps(r.name, set())),
            run.delete_before_replace.get(r.name, False),
        )
        for r in run.of_type(COMMAND)
    ]
