"""
Fuzz a peer's upload port (see L{tests.fuzz.upload_world}): request
frames and byte streams against a repository holding published files,
unpublished files and a published name that now links outside.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import given
from twisted.trial.unittest import SynchronousTestCase

from tests.fuzz import upload_cases as C
from tests.fuzz.profile import suite_settings
from tests.fuzz.upload_world import UploadFixture


class UploadFuzz(SynchronousTestCase):
    @classmethod
    def setUpClass(cls):
        cls.base = Path(tempfile.mkdtemp(prefix="twistedp2p-fuzz-upload-"))
        cls.fixture = UploadFixture(cls.base)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.base, ignore_errors=True)

    @suite_settings()
    @given(C.upload_ops())
    def test_requests(self, ops):
        """
        Only published names produce bytes, exactly the range asked for;
        garbage is refused; idle connections close and free their slots.
        """
        C.run_ops(self.fixture, ops)
