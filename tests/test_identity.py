"""
Peer keys: the key file, fingerprints, hello signatures.
"""

import hashlib
import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import identity


class KeyFileTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.join(self.mktemp(), ".p2p")

    def test_made_once_then_loaded(self):
        first, created = identity.load_or_create(self.dir)
        self.assertTrue(created)
        path = os.path.join(self.dir, identity.KEY_FILE)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        again, created = identity.load_or_create(self.dir)
        self.assertFalse(created)
        self.assertEqual(again.public_key, first.public_key)
        # No temporary file is left behind.
        self.assertEqual(os.listdir(self.dir), [identity.KEY_FILE])

    def test_corrupt_file_is_an_error_and_kept(self):
        os.makedirs(self.dir)
        path = os.path.join(self.dir, identity.KEY_FILE)
        with open(path, "wb") as f:
            f.write(b"-----BEGIN PRIVATE KEY-----\ngarbage\n")
        e = self.assertRaises(identity.KeyFileError, identity.load_or_create, self.dir)
        self.assertIn(path, str(e))
        self.assertIn("forget", str(e))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"-----BEGIN PRIVATE KEY-----\ngarbage\n")

    def test_unreadable_file_is_an_error(self):
        os.makedirs(os.path.join(self.dir, identity.KEY_FILE))
        self.assertRaises(identity.KeyFileError, identity.load_or_create, self.dir)


class SignatureTests(SynchronousTestCase):
    def test_fingerprint_is_sha256_prefix(self):
        me = identity.Identity.generate()
        expected = hashlib.sha256(bytes.fromhex(me.public_key)).hexdigest()[:16]
        self.assertEqual(me.fingerprint, expected)
        self.assertTrue(identity.is_fingerprint(me.fingerprint))
        self.assertFalse(identity.is_fingerprint("alice"))

    def test_hello_signature_binds_every_field(self):
        me = identity.Identity.generate()
        fields = ("ab" * 32, "trk", "10.0.0.1", "alice", 4000)
        sig = me.sign_hello(*fields)
        self.assertTrue(identity.verify(me.public_key, sig, identity.hello_message(*fields, me.public_key)))
        for i in range(len(fields)):
            changed = list(fields)
            changed[i] = 4001 if i == 4 else "x" + str(changed[i])
            self.assertFalse(identity.verify(me.public_key, sig, identity.hello_message(*changed, me.public_key)))
        other = identity.Identity.generate()
        self.assertFalse(identity.verify(other.public_key, sig, identity.hello_message(*fields, other.public_key)))
        self.assertFalse(identity.verify("zz", sig, b""))
        self.assertFalse(identity.verify(me.public_key, "00" * 64, b""))
