"""
Peer identity: an Ed25519 key pair per repository, the hello challenge it
signs, and key fingerprints.

A native peer makes its key pair at first start and keeps the private key
in C{REPO/.p2p/identity.key} (PEM, PKCS#8, mode 0600, written atomically).
A key file that cannot be read is an error (L{KeyFileError}), never
replaced: the tracker binds the hostname to the key on first use, so a new
key would lock the peer out of its own name.

The tracker answers a C{challenge} request with a random nonce; the peer's
C{hello} then carries its public key and a signature over
L{hello_message}: the nonce, the tracker's id, the peer's address as the
tracker sees it, the hostname, the P2P port and the key itself.  A nonce is
good for one hello on the connection that asked for it, so a signature
cannot be replayed to another session or another tracker.

Pure functions and small file I/O (a few hundred bytes, once at start).
"""

from __future__ import annotations

import hashlib
import os
import tempfile

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from twistedp2p.errors import P2PError

#: Where the private key lives, relative to the repository's C{.p2p/}.
KEY_FILE = "identity.key"
#: Bytes of a challenge nonce.
NONCE_BYTES = 32
#: Hex digits of a short fingerprint: the first 64 bits of the SHA-256 of
#: the raw 32-byte public key.
FINGERPRINT_CHARS = 16
#: Hex digits of a public key (32 raw bytes) and of a signature (64).
KEY_HEX_CHARS = 64
SIGNATURE_HEX_CHARS = 128
#: Domain separation: what a hello signature is for, and its format.
HELLO_CONTEXT = "twistedp2p hello 1"


class KeyFileError(P2PError):
    """the peer's identity key file cannot be used"""


def fingerprint(public_key_hex: str) -> str:
    """
    The short fingerprint of a public key given as 64 hex digits: the first
    L{FINGERPRINT_CHARS} hex digits of the SHA-256 of its 32 raw bytes.
    """
    return hashlib.sha256(bytes.fromhex(public_key_hex)).hexdigest()[:FINGERPRINT_CHARS]


def is_fingerprint(text: str) -> bool:
    """
    Whether C{text} has the form of a short fingerprint (16 lowercase hex).
    """
    return len(text) == FINGERPRINT_CHARS and all(c in "0123456789abcdef" for c in text)


def is_key_hex(text: object) -> bool:
    return isinstance(text, str) and len(text) == KEY_HEX_CHARS and all(c in "0123456789abcdef" for c in text)


def is_signature_hex(text: object) -> bool:
    return (
        isinstance(text, str)
        and len(text) == SIGNATURE_HEX_CHARS
        and all(c in "0123456789abcdef" for c in text)
    )


def new_nonce() -> str:
    """
    A fresh challenge nonce, as hex.
    """
    return os.urandom(NONCE_BYTES).hex()


def hello_message(nonce: str, tracker: str, address: str, hostname: str, p2p_port: int, key: str) -> bytes:
    """
    The bytes a hello signature covers.  Fields are joined by newlines;
    none of them can contain one (hostnames have no control characters,
    the tracker id and address are the tracker's own).
    """
    parts = [HELLO_CONTEXT, nonce, tracker, address, hostname, str(p2p_port), key]
    return "\n".join(parts).encode("utf-8")


def verify(key: str, signature: str, message: bytes) -> bool:
    """
    Whether C{signature} (hex) is C{key}'s (hex) Ed25519 signature of
    C{message}.  Malformed keys or signatures are simply not valid.
    """
    if not is_key_hex(key) or not is_signature_hex(signature):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(key)).verify(bytes.fromhex(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


class Identity:
    """
    A peer's key pair.
    """

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        #: The public key, 64 lowercase hex digits (what hello carries).
        self.public_key = raw.hex()
        #: Its short fingerprint (L{fingerprint}).
        self.fingerprint = fingerprint(self.public_key)

    @classmethod
    def generate(cls) -> "Identity":
        return cls(Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> str:
        """
        Sign C{message}; the signature as 128 hex digits.
        """
        return self._private.sign(message).hex()

    def sign_hello(self, nonce: str, tracker: str, address: str, hostname: str, p2p_port: int) -> str:
        return self.sign(hello_message(nonce, tracker, address, hostname, p2p_port, self.public_key))

    def private_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def load_or_create(directory: str) -> tuple[Identity, bool]:
    """
    The identity kept in C{directory/identity.key}, made (and written
    atomically, mode 0600) when the file does not exist.

    @return: C{(identity, created)}.
    @raise KeyFileError: the file exists but is not an Ed25519 private key
        in PEM, or cannot be read or written.
    """
    path = os.path.join(directory, KEY_FILE)
    try:
        with open(path, "rb") as f:
            data = f.read(64 * 1024)
    except FileNotFoundError:
        data = None
    except OSError as e:
        raise KeyFileError(f"cannot read the identity key {path}: {e.strerror or e}") from e
    if data is not None:
        return Identity(_parse(path, data)), False
    identity = Identity.generate()
    try:
        os.makedirs(directory, exist_ok=True)
        _write_private(path, identity.private_pem())
    except FileExistsError:
        # Another process made it meanwhile: use that one.
        return load_or_create(directory)
    except OSError as e:
        raise KeyFileError(f"cannot write the identity key {path}: {e.strerror or e}") from e
    return identity, True


def _parse(path: str, data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(
            f"the identity key {path} is corrupt or not a PEM private key ({e}); it was left as it is: "
            f"restore it from a backup, or move it away to make a new key (the tracker then refuses the "
            f"new key for this hostname until its admin runs 'forget HOSTNAME')"
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"the identity key {path} is not an Ed25519 key; it was left as it is")
    return key


def _write_private(path: str, data: bytes) -> None:
    """
    Write C{data} to C{path} atomically with mode 0600: a temporary file in
    the same directory, fsynced, then linked into place (never over an
    existing file: L{FileExistsError} then).
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".identity.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
