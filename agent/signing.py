"""Signed remote requests: Ed25519 over the request's canonical JSON.

With ``remote.public_key_file`` set, a config change or command is accepted only if it carries
``"signature"``: the base64 Ed25519 signature, by the matching private key, of the request
without its ``signature`` key, serialised as canonical JSON (keys sorted, no spaces, UTF-8). A
broker account alone then cannot reconfigure the cameras.

``cryptography`` is imported by the functions that need it, not with this module: the agent
imports this module always (its control plane) but uses it only with a key configured, and
loading ``cryptography`` adds about 9 MB to every agent's resident memory.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import UserError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def canonical(body: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as error:
        raise UserError(f"remote.public_key_file: cannot read an Ed25519 public key from {path}: {error}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UserError(f"remote.public_key_file: {path} is not an Ed25519 public key")
    return key


def verify(key: Ed25519PublicKey, body: dict[str, Any]) -> str | None:
    """None if ``body`` is signed by ``key``, else what is wrong."""
    from cryptography.exceptions import InvalidSignature

    signature = body.get("signature")
    if not isinstance(signature, str):
        return "signature: missing (this device accepts only signed requests)"
    try:
        key.verify(base64.b64decode(signature, validate=True), canonical(body))
    except (InvalidSignature, binascii.Error, ValueError):
        return "signature: does not match the request (wrong key, or the request was altered)"
    return None


def sign(private_key_pem: Path, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its ``signature`` (for operators' tools)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(private_key_pem.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"cannot read an Ed25519 private key from {private_key_pem}: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"{private_key_pem} is not an Ed25519 private key")
    return {**body, "signature": base64.b64encode(key.sign(canonical(body))).decode()}
