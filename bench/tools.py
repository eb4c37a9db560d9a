"""
The baselines' tools: found on the PATH, or installed from Debian's
packages with ``apt-get`` when missing (the benchmark's own setup; this
needs root).  A tool that cannot be had is reported, and its baseline is
skipped with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess

#: tool -> Debian package.
PACKAGES = {
    "curl": "curl",
    "sha256sum": "coreutils",
    "nginx": "nginx-light",
}

_updated = False


def _which(tool: str) -> str | None:
    """
    C{tool} on the PATH, or in the system directories (nginx is in
    /usr/sbin, which a user's PATH may lack).
    """
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def ensure(tool: str, log=print) -> tuple[str | None, str]:
    """
    Find C{tool}, installing its Debian package if needed.

    @return: (path or None, note).  The note says what was done, or why
        the tool is missing.
    """
    found = _which(tool)
    if found:
        return found, ""
    package = PACKAGES.get(tool, tool)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, f"{tool} is not installed and cannot be installed here (needs root and apt-get)"
    global _updated
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        if not _updated:
            log(f"bench: apt-get update (to install {package})")
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=300)
            _updated = True
        log(f"bench: apt-get install -y {package}")
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", package], check=True, env=env, capture_output=True, timeout=600
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        detail = getattr(e, "stderr", b"") or b""
        return None, f"installing {package} failed: {detail.decode(errors='replace').strip()[-200:] or e}"
    found = _which(tool)
    if not found:
        return None, f"{package} installed but {tool} is still not on the PATH"
    return found, f"installed {package} with apt-get"
