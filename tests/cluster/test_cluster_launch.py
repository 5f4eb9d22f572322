"""Peers run the rsm_shm their manager runs, whatever the working directory holds."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys, warnings
warnings.simplefilter("ignore")
from rsm_shm.cluster import KVClient, LocalCluster
c = LocalCluster(sys.argv[1], "rsm_shm.cluster:KVStore", peers=1, fsync=False)
try:
    c.start()
    c.wait_leader(20)
    with KVClient(sys.argv[1]) as kv:
        kv.put("a", 1)
        print("got", kv.get("a"))
finally:
    c.destroy()
"""


@pytest.mark.timeout(90)
def test_a_checkout_in_the_working_directory_does_not_shadow_the_installed_package(tmp_path, shm_name):
    # As after `pip install .` in a checkout: the source tree in the working directory has
    # no compiled extension.  A peer started with `python -m` imported it and died.
    shadow = tmp_path / "checkout" / "rsm_shm"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("the uncompiled rsm_shm of the working directory")\n')
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), shm_name("launch")], cwd=shadow.parent, capture_output=True, text=True, timeout=80
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "got 1" in out.stdout
