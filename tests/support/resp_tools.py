"""The Redis tools the RESP tests drive (redis-cli, redis-benchmark, redis-server,
nutcracker): .ci/run installs them, so under CI a missing one fails the test; elsewhere
the test is skipped with the reason."""
import os
import shutil

import pytest


def need_tool(name: str) -> str:
    """The tool's path; skips (or, when $CI is set, fails) the test without it."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}")
                                  else None)
    if path is None:
        message = (f"{name} is not installed (Debian: apt-get install redis-tools "
                   "redis-server nutcracker; .ci/run does)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
