"""Ed25519 keys: generate, read, and compare.

Reading a key refuses, as ssh does, a key file (or a config file holding the key
inline) that others could read or replace: see read_private and check_inline_config.
"""

from __future__ import annotations

import errno
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


MAX_KEY_FILE = 64 * 1024  # an Ed25519 PEM is about 120 bytes; a bigger file is no key


def is_inline(value: str) -> bool:
    """private_key holds the PEM itself, not a file name."""
    return value.lstrip().startswith(PEM_MARK)


def read_private(value: str, base_dir: str) -> bytes:
    """value is inline PEM or a path (relative to base_dir). Returns the PEM bytes.

    A key file is checked as ssh checks its keys: it is opened with O_NOFOLLOW (a
    symbolic link as the last component is refused) and without blocking, and the
    open descriptor is checked (no gap between check and read): a regular file, of
    at most MAX_KEY_FILE bytes, owned by the agent's user or root, with no access
    for group or others. Its directory and every one above it (on the real path)
    must be owned by the agent's user or root, and not be writable by group or
    others, except a sticky directory owned by root (like /tmp), in which no one
    else can rename or remove the entries."""
    if is_inline(value):
        # lstrip: OpenSSL refuses a PEM after leading blanks; a lone surrogate (JSON
        # allows "\ud800") cannot be encoded, and is no PEM either
        return value.lstrip().encode(errors="replace")
    path = value if os.path.isabs(value) else os.path.join(base_dir, value)
    try:
        directory = os.path.realpath(os.path.dirname(path) or ".")
        fd = os.open(os.path.join(directory, os.path.basename(path)),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP and os.path.islink(path):
            raise KeyProblem(f"key file {_shown(path)} is a symbolic link; give the real file "
                             f"({os.path.realpath(path)})") from None
        raise KeyProblem(f"cannot read key file {_shown(path)}: {e.strerror}") from None
    except ValueError:  # a NUL byte or a lone surrogate: no file has such a name
        raise KeyProblem(f"cannot read key file {path!r}: not a valid file name") from None
    try:
        _check_key_file(path, os.fstat(fd))
        _check_parents(path, directory)
        data = b""
        while len(data) <= MAX_KEY_FILE:
            chunk = os.read(fd, MAX_KEY_FILE + 1 - len(data))
            if not chunk:
                return data
            data += chunk
        raise KeyProblem(f"key file {_shown(path)} is larger than {MAX_KEY_FILE} bytes; it is no key")
    except OSError as e:
        raise KeyProblem(f"cannot read key file {_shown(path)}: {e.strerror}") from None
    finally:
        os.close(fd)


def _trusted(uid: int) -> bool:
    return uid in (0, os.geteuid())


def _check_key_file(path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise KeyProblem(f"key file {_shown(path)} is not a regular file")
    if not _trusted(st.st_uid):
        raise KeyProblem(f"key file {_shown(path)} is owned by uid {st.st_uid}; it must be owned by "
                         f"root or the agent's user (uid {os.geteuid()}); run: chown "
                         f"{os.geteuid()} {path}")
    if st.st_mode & 0o077:
        raise KeyProblem(
            f"key file {_shown(path)} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )
    if st.st_size > MAX_KEY_FILE:
        raise KeyProblem(f"key file {_shown(path)} is larger than {MAX_KEY_FILE} bytes; it is no key")


def _check_parents(path: str, directory: str) -> None:
    """directory is real (no symbolic links): walk from it up to /."""
    while True:
        st = os.stat(directory)
        sticky_root = st.st_uid == 0 and st.st_mode & stat.S_ISVTX
        if not _trusted(st.st_uid):
            raise KeyProblem(f"key file {_shown(path)} is in {directory}, which is owned by uid "
                             f"{st.st_uid}, who could replace the key; keep keys in "
                             "directories owned by root or the agent's user")
        if st.st_mode & 0o022 and not sticky_root:
            raise KeyProblem(f"key file {_shown(path)} is in {directory}, which group or others can "
                             f"write (mode {stat.S_IMODE(st.st_mode):04o}), so they could "
                             f"replace the key; run: chmod go-w {directory}")
        parent = os.path.dirname(directory)
        if parent == directory:
            return
        directory = parent


def check_inline_config(config_path: str, document) -> None:
    """A config file (document: its parsed JSON) that holds the private key inline
    must not be accessible by group or others, as a key file must not: KeyProblem.
    Only for a config read from a file; a document built in memory has no mode."""
    value = document.get("private_key") if isinstance(document, dict) else None
    if not isinstance(value, str) or not is_inline(value):
        return
    try:
        mode = os.stat(config_path).st_mode
    except OSError as e:
        raise KeyProblem(f"cannot check {config_path}: {e.strerror}") from None
    if mode & 0o077:
        raise KeyProblem(
            f"{config_path} holds the private key inline and is accessible by group or "
            f"others (mode {stat.S_IMODE(mode):04o}); run: chmod 600 {config_path} (or put "
            "the key in a file of its own)"
        )


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


def _shown(path: str) -> str:
    """A path for a message: as it is, or quoted and escaped when it holds a newline or
    another character that would break the message's line."""
    return path if path.isprintable() else repr(path)
