"""Ed25519 keys: generate, read, and compare.

Reading a key file refuses one that group or others can read, as ssh does.
"""

from __future__ import annotations

import os
import stat

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PEM_MARK = "-----BEGIN"


class KeyProblem(ValueError):
    """A key that cannot be used; the message is for the user."""


def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def write_private(path: str, key: Ed25519PrivateKey, *, force: bool = False) -> None:
    """Write with mode 0600 from the start: the key is never readable by others."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, private_pem(key))
    finally:
        os.close(fd)


def parse_private(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise KeyProblem(f"not an unencrypted PEM private key ({_first_line(e)})") from None
    except Exception as e:  # cryptography raises UnsupportedAlgorithm for odd keys
        raise KeyProblem(f"not a usable private key ({_first_line(e)})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyProblem(f"is {_kind(key)} key; aronet needs Ed25519")
    return key


def parse_public(pem: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as e:
        raise KeyProblem(f"not a PEM public key ({_first_line(e)})") from None
    except Exception as e:
        raise KeyProblem(f"not a usable public key ({_first_line(e)})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyProblem(f"is {_kind(key)} key; aronet needs Ed25519")
    return key


def read_private(value: str, base_dir: str) -> bytes:
    """value is inline PEM or a path (relative to base_dir). Returns the PEM bytes."""
    if value.lstrip().startswith(PEM_MARK):
        # lstrip: OpenSSL refuses a PEM after leading blanks; a lone surrogate (JSON
        # allows "\ud800") cannot be encoded, and is no PEM either
        return value.lstrip().encode(errors="replace")
    path = value if os.path.isabs(value) else os.path.join(base_dir, value)
    try:
        st = os.stat(path)
    except OSError as e:
        raise KeyProblem(f"cannot read key file {path}: {e.strerror}") from None
    except ValueError:  # a NUL byte or a lone surrogate: no file has such a name
        raise KeyProblem(f"cannot read key file {path!r}: not a valid file name") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyProblem(f"key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyProblem(
            f"key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise KeyProblem(f"cannot read key file {path}: {e.strerror}") from None


def same_public(a: str, b: str) -> bool:
    """Compare two public keys by value, not by PEM text (line breaks may differ)."""
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    return parse_public(a).public_bytes(*raw) == parse_public(b).public_bytes(*raw)


_KINDS = (
    ((rsa.RSAPrivateKey, rsa.RSAPublicKey), "an RSA"),
    ((ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey), "an EC"),
    ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "a DSA"),
    ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "an Ed448"),
    ((x25519.X25519PrivateKey, x25519.X25519PublicKey), "an X25519"),
    ((x448.X448PrivateKey, x448.X448PublicKey), "an X448"),
)


def _kind(key) -> str:
    """"an RSA": by interface, since the concrete class names vary between releases
    of cryptography (_RSAPrivateKey, RSAPrivateKey)."""
    for types, name in _KINDS:
        if isinstance(key, types):
            return name
    name = type(key).__name__.lstrip("_")
    return "a " + name.removesuffix("PrivateKey").removesuffix("PublicKey")


def _first_line(e: Exception) -> str:
    # OpenSSL errors carry (message, [error records]): show the message only.
    text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    return (text.splitlines() or [type(e).__name__])[0]
