"""
The twistd plugins must be visible after a plain and an editable install.

Each case builds a fresh virtualenv, installs a copy of the source tree into
it, and asks that venv's ``twistd`` to list its plugins.  Twisted's plugin
loader only scans real ``twisted/plugins`` directories on ``sys.path``, so an
install that hides them (e.g. an import-hook editable install) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "venv", "__pycache__", "*.egg-info", "build", "dist",
    "dropin.cache", "_trial_temp*", ".pytest_cache", ".hypothesis", "*.log",
    "*.sqlite3", "p2p-repo", "node_modules", "bench",
)


def _fresh_venv(where: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(where)
    return where / "bin"


def _run(args, cwd, timeout=300) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_twistd_lists_plugins(tmp_path: Path, editable: bool) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    assert not (source / "twisted" / "__init__.py").exists()
    assert not (source / "twisted" / "plugins" / "__init__.py").exists()
    bindir = _fresh_venv(tmp_path / "venv")
    target = ["-e", str(source)] if editable else [str(source)]
    _run([bindir / "python", "-m", "pip", "install", "-q", *target], cwd=tmp_path)

    listing = _run([bindir / "twistd", "--help"], cwd=tmp_path)
    assert "p2ptracker" in listing
    assert "p2ppeer" in listing
    # The plugin's service module really imports and parses its options.
    assert "--listen" in _run([bindir / "twistd", "p2ptracker", "--help"], cwd=tmp_path)
    assert "--tracker" in _run([bindir / "twistd", "p2ppeer", "--help"], cwd=tmp_path)
    if not editable:
        # a plain install runs from site-packages, not from the copy
        out = _run(
            [bindir / "python", "-c", "import twistedp2p; print(twistedp2p.__file__)"],
            cwd=tmp_path,
        )
        assert str(source) not in out
        # The dashboards' static files are installed, fragments included
        # (read_static fails on a page whose fragment is missing).
        out = _run(
            [bindir / "python", "-c",
             "from twistedp2p.web.server import read_static; print(sorted(read_static()))"],
            cwd=tmp_path,
        )
        assert "'peer.html'" in out and "'tracker.html'" in out
        # The console command: its version, and twistd finding the plugins
        # through it.
        import twistedp2p

        out = _run([bindir / "twistedp2p", "--version"], cwd=tmp_path)
        assert out.startswith(f"twistedp2p {twistedp2p.__version__} ")
        assert "--listen" in _run([bindir / "twistedp2p", "tracker", "--help"], cwd=tmp_path)
        assert "--tracker" in _run([bindir / "twistedp2p", "peer", "--help"], cwd=tmp_path)
        assert _run([bindir / "twistedp2p", "peer", "--version"], cwd=tmp_path) == out
        assert not (tmp_path / "p2p-repo").exists()
        done = subprocess.run([bindir / "twistedp2p", "bench"], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 2 and "needs a clone" in done.stderr
