"""Consent receipts in the Kantara Initiative Consent Receipt v1.1 format, signed and verifiable.

A receipt is the Kantara JSON object, signed as a compact JWS (RFC 7515) with EdDSA over Ed25519
(RFC 8037), as the Kantara specification suggests JWT for signed receipts. The signing key is
derived from DATA_KEY, so every store server process signs with the same key without another
secret to distribute; the public key is published as a JWK so anyone can verify a receipt offline.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

VERSION = "KI-CR-v1.1.0"
REQUIRED = (
    "version",
    "jurisdiction",
    "consentTimestamp",
    "collectionMethod",
    "consentReceiptID",
    "language",
    "piiPrincipalId",
    "piiControllers",
    "policyUrl",
    "services",
    "sensitive",
    "spiCat",
)
MAX_JWS = 20_000


class InvalidReceipt(ValueError):
    """The text is not a receipt this server signed, or it was altered."""


@dataclass(frozen=True)
class Controller:
    """The PII controller named on every receipt."""

    name: str
    contact: str
    address: str
    email: str
    phone: str
    url: str


@dataclass(frozen=True)
class Scope:
    """What the subscriber agreed to, in the terms the receipt states."""

    merchant_name: str | None  # None: every affiliated merchant
    share: str  # playlist | preferences
    statistics: bool
    valid_until: datetime | None  # None: until withdrawn


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_key(data_key: str) -> Ed25519PrivateKey:
    """The receipt signing key, derived deterministically from DATA_KEY."""
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"consent-receipt-ed25519")
    return Ed25519PrivateKey.from_private_bytes(seed.derive(data_key.encode()))


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The verification key as a JWK (RFC 8037), with its key id."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw), "kid": key_id(public_key), "use": "sig"}


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short stable id of a verification key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def key_from_jwk(jwk: dict[str, Any]) -> Ed25519PublicKey:
    """An Ed25519 public key from its JWK; ValueError if it is not one."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        raise ValueError("not an Ed25519 JWK")
    return Ed25519PublicKey.from_public_bytes(_unb64(jwk["x"]))


# Disclosed to the merchant whatever the scope: who (pseudonymously) is where, and since when.
DISCLOSED_WITH_SCOPE = ("Pseudonym (different at each merchant)", "Presence (zone, time)")

# Purposes and terms are written in the receipt's language; category labels stay in English so
# that receipts from every language can be compared by machine.
WORDS: dict[str, dict[str, str]] = {
    "en": {
        "all": "all affiliated merchants",
        "presence": "Detect the presence of your emitter at {where}, to play your music there",
        "playlist": "Send your playlist to the merchant's playback device, under a pseudonym",
        "preferences": "Send only your musical preferences (genres, mood) to the merchant's "
        "playback device, under a pseudonym",
        "statistics": "Anonymous statistics of the area (k-anonymous reports, at least 5 people "
        "per published figure)",
        "until_withdrawn": "Until withdrawn, at any time, at {url}",
        "until": "Ends at {until}, or earlier if withdrawn at {url}",
        "method": "QR code at the merchant's premises, then a web form",
    },
    "fr": {
        "all": "tous les commerçants partenaires",
        "presence": "Détecter la présence de votre émetteur chez {where}, pour y jouer votre "
        "musique",
        "playlist": "Envoyer votre playlist à l'appareil de diffusion du commerçant, sous un "
        "pseudonyme",
        "preferences": "Envoyer seulement vos préférences musicales (genres, ambiance) à "
        "l'appareil de diffusion du commerçant, sous un pseudonyme",
        "statistics": "Statistiques anonymes du quartier (rapports k-anonymes, au moins 5 "
        "personnes par chiffre publié)",
        "until_withdrawn": "Jusqu'au retrait, à tout moment, sur {url}",
        "until": "Prend fin le {until}, ou avant en cas de retrait sur {url}",
        "method": "Code QR chez le commerçant, puis formulaire web",
    },
}


def _termination(words: dict[str, str], scope: Scope, withdraw_url: str) -> str:
    if scope.valid_until is None:
        return words["until_withdrawn"].format(url=withdraw_url)
    return words["until"].format(until=scope.valid_until.isoformat(), url=withdraw_url)


def build(
    *,
    receipt_id: str,
    timestamp: int,
    language: str,
    principal_id: str,
    controller: Controller,
    policy_url: str,
    withdraw_url: str,
    scope: Scope,
    jurisdiction: str = "FR",
    collection_method: str | None = None,
) -> dict[str, Any]:
    """The Kantara v1.1 receipt of one consent (plain JSON, not yet signed)."""
    if scope.share not in ("playlist", "preferences"):
        raise ValueError("share must be playlist or preferences")
    words = WORDS.get(language, WORDS["en"])
    where = scope.merchant_name or words["all"]
    termination = _termination(words, scope, withdraw_url)
    purposes: list[dict[str, Any]] = [
        {
            "purpose": words["presence"].format(where=where),
            "purposeCategory": ["Personalisation", "Core function"],
            "consentType": "EXPLICIT",
            "piiCategory": ["Rotating pseudonymous device identifier", "Presence (place, time)"],
            "primaryPurpose": True,
            "termination": termination,
            "thirdPartyDisclosure": False,
        },
        {
            "purpose": words[scope.share],
            "purposeCategory": ["Personalisation"],
            "consentType": "EXPLICIT",
            # What the merchant's device and portal get: the scope's data, and with it a
            # pseudonym and when it is in which zone (push payloads, the live view).
            "piiCategory": [
                "Playlist" if scope.share == "playlist" else "Musical preferences",
                *DISCLOSED_WITH_SCOPE,
            ],
            "primaryPurpose": True,
            "termination": termination,
            "thirdPartyDisclosure": True,
            "thirdPartyName": where,
        },
    ]
    if scope.statistics:
        purposes.append(
            {
                "purpose": words["statistics"],
                "purposeCategory": ["Research and statistics"],
                "consentType": "EXPLICIT",
                "piiCategory": ["Home area (INSEE code)", "Visits (place, time, duration)"],
                "primaryPurpose": False,
                "termination": termination,
                "thirdPartyDisclosure": False,
            }
        )
    return {
        "version": VERSION,
        "jurisdiction": jurisdiction,
        "consentTimestamp": int(timestamp),
        "collectionMethod": collection_method or words["method"],
        "consentReceiptID": receipt_id,
        "language": language,
        "piiPrincipalId": principal_id,
        "piiControllers": [
            {
                "piiController": controller.name,
                "onBehalf": False,
                "contact": controller.contact,
                "address": controller.address,
                "email": controller.email,
                "phone": controller.phone,
                "piiControllerUrl": controller.url,
            }
        ],
        "policyUrl": policy_url,
        "services": [{"service": "Collective Mood", "purposes": purposes}],
        "sensitive": False,
        "spiCat": [],
    }


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, compact), so equal receipts sign identically."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(key: Ed25519PrivateKey, receipt: dict[str, Any]) -> str:
    """The receipt as a compact JWS signed with EdDSA."""
    missing = [f for f in REQUIRED if f not in receipt]
    if missing:
        raise ValueError(f"receipt lacks {', '.join(missing)}")
    header = {"alg": "EdDSA", "typ": "JWT", "kid": key_id(key.public_key())}
    signing_input = f"{_b64(canonical(header))}.{_b64(canonical(receipt))}"
    return f"{signing_input}.{_b64(key.sign(signing_input.encode()))}"


def verify(public_key: Ed25519PublicKey, jws: str) -> dict[str, Any]:
    """The receipt inside a signed JWS; InvalidReceipt if it was not signed by this key."""
    if not isinstance(jws, str) or len(jws) > MAX_JWS:
        raise InvalidReceipt("a receipt is a signed text of at most 20,000 characters")
    parts = jws.strip().split(".")
    if len(parts) != 3:
        raise InvalidReceipt("a signed receipt has three dot-separated parts")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidReceipt("the receipt is not well-formed base64url JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "EdDSA":
        raise InvalidReceipt("only EdDSA-signed receipts are accepted")
    try:
        public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode())
    except InvalidSignature:
        raise InvalidReceipt("the signature does not match: altered or not signed here") from None
    if not isinstance(claims, dict) or claims.get("version") != VERSION:
        raise InvalidReceipt(f"not a {VERSION} consent receipt")
    missing = [f for f in REQUIRED if f not in claims]
    if missing:
        raise InvalidReceipt(f"receipt lacks {', '.join(missing)}")
    return claims
