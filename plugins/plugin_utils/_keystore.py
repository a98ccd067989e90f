# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Key store file I/O on the controller (used by the ipsec_keystore action and lookup).

The file is JSON under a comment header (see module_utils._pairs.store_document): JSON is also YAML,
so YAML tools read it, and stores written as YAML by earlier versions are still read (with libyaml's
C loader when PyYAML has it).  JSON because a full mesh's store is large (N*(N-1) entries): at 100
hosts pure-Python YAML took 5.7 s to read and 2.6 s to write, libyaml 0.9 + 0.7 s, JSON 0.04 s
(issue 18).  Mode 0600, in a directory created 0700.
It may be ansible-vault encrypted as a whole: it is then decrypted with the run's vault secrets and
written back encrypted with the same vault id.  Writes are atomic (temporary file created 0600 in
the same directory, fsync, rename) and serialised with an exclusive lock on the directory.
Nothing here prints or raises key material.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile

import yaml

from ansible.errors import AnsibleError
from ansible.parsing.vault import VaultLib, is_encrypted

from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils._pairs import STORE_HEADER


class KeyStoreError(AnsibleError):
    pass


class VaultInfo:
    """How an encrypted store was opened, so that it can be written back the same way."""

    def __init__(self, vault_id, secret):
        self.vault_id = vault_id
        self.secret = secret


def resolve(path, basedir=None):
    """The key store's absolute path.  A relative path is refused: Ansible would read it against
    the directory of whichever playbook runs (the top-level site.yml, playbooks/derive.yml,
    playbooks/rekey.yml live in different directories), so two runs could silently use two
    different stores - and generate new keys for every pair.  ``basedir`` is only named in the error."""
    if not isinstance(path, str) or not path.strip():
        raise KeyStoreError("ipsec key store: path must be a non-empty string")
    p = os.path.expanduser(path.strip())
    if not os.path.isabs(p):
        raise KeyStoreError(
            "ipsec_keystore_path: %r is a relative path; give an absolute path or one starting with ~/ "
            "(a relative path would be read against the directory of each playbook%s, so site.yml, "
            "derive.yml and rekey.yml could use different stores and new keys)"
            % (path, " (here %s)" % basedir if basedir else ""))
    return os.path.normpath(p)


def loose_mode_warnings(path):
    """Warnings (text) for a store or directory that others can read."""
    out = []
    for p, want in ((os.path.dirname(path), 0o700), (path, 0o600)):
        try:
            mode = stat.S_IMODE(os.stat(p).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            out.append("ipsec key store: %s is mode %04o; it should be %04o (chmod %o %s)" % (p, mode, want, want, p))
    return out


def _plain(obj):
    """Deep copy into plain dict/list/str/int (Ansible's tagged types do not safe_dump)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, int):
        return int(obj)
    return str(obj)


_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(text):
    """Store text -> document: JSON (what write() makes) fast, else YAML (older stores, hand edits).

    Raises ValueError (JSON) or yaml.YAMLError; neither message is shown (it could quote a key)."""
    body = text.lstrip()
    while body.startswith("#"):
        body = body.split("\n", 1)[1].lstrip() if "\n" in body else ""
    if body.startswith("{"):
        try:
            return json.loads(body)
        except ValueError:
            pass    # not JSON after all (a YAML flow mapping, a hand edit): YAML says where
    return yaml.load(text, Loader=_SafeLoader)   # noqa: S506 - a safe loader (libyaml's when available)


def read(path, vault_secrets=None):
    """-> (parsed document or None if the file does not exist, VaultInfo or None)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None, None
    except OSError as e:
        raise KeyStoreError("ipsec key store: cannot read %s: %s" % (path, e.strerror))
    vault = None
    if is_encrypted(data):
        if not vault_secrets:
            raise KeyStoreError("ipsec key store: %s is vault-encrypted; run with --ask-vault-pass or "
                                "--vault-id so that it can be opened" % path)
        try:
            data, vault_id, secret = VaultLib(vault_secrets).decrypt_and_get_vault_id(data)
        except AnsibleError:
            raise KeyStoreError("ipsec key store: %s is vault-encrypted and none of the given vault "
                                "secrets opens it" % path) from None
        vault = VaultInfo(vault_id, secret)
    try:
        doc = _parse(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        # the YAML error text could quote a line of the file, i.e. a key: give the position only
        mark = getattr(e, "problem_mark", None)
        where = " (line %d)" % (mark.line + 1) if mark is not None else ""
        raise KeyStoreError("ipsec key store: %s is not valid YAML%s" % (path, where)) from None
    return doc, vault


def render(doc):
    """The store text: the header, then the document as JSON, one pair entry per line (sorted)."""
    doc = _plain(doc)
    pairs = doc.get("pairs") or {}
    head = {k: v for k, v in doc.items() if k != "pairs"}
    out = [STORE_HEADER, "{\n"]
    for k in sorted(head):
        out.append(" %s: %s,\n" % (json.dumps(k), json.dumps(head[k], sort_keys=True)))
    out.append(' "pairs": {')
    first_src = True
    for src in sorted(pairs):
        out.append("%s\n  %s: {" % ("" if first_src else ",", json.dumps(src)))
        first_src = False
        dsts = pairs[src]
        out.append(",".join("\n   %s: %s" % (json.dumps(dst), json.dumps(dsts[dst], sort_keys=True, separators=(", ", ": ")))
                            for dst in sorted(dsts)))
        out.append("\n  }")
    out.append("\n }\n}\n")
    return "".join(out)


def ensure_dir(directory):
    """Create the directory 0700 if missing (parents too, each 0700): True when it was made."""
    if os.path.isdir(directory):
        return False
    old = os.umask(0o077)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    finally:
        os.umask(old)
    return True


def write(path, doc, vault=None):
    """Atomically replace ``path`` with ``doc`` (encrypted again if ``vault``), mode 0600."""
    directory = os.path.dirname(path)
    ensure_dir(directory)
    text = render(doc)
    data = VaultLib().encrypt(text, secret=vault.secret, vault_id=vault.vault_id) if vault else text.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=".ipsec-keystore-", suffix=".tmp", dir=directory)   # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def locked(path, create=True):
    """Exclusive lock on the store's directory for a read-modify-write cycle.

    With create=False (check mode) a missing directory is not created: there is nothing to read
    and nothing will be written, so there is nothing to lock either.
    """
    directory = os.path.dirname(path)
    if not create and not os.path.isdir(directory):
        yield
        return
    ensure_dir(directory)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
