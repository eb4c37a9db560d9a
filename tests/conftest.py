"""
Run the suite from a scratch directory: trial's ``TestCase.mktemp`` makes
paths relative to the working directory, which under pytest would otherwise
be the repository itself.
"""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _scratch_working_directory(tmp_path_factory):
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(previous)
