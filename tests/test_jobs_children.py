"""The supervisor's last sweep: every process below it stopped, one that ignores SIGTERM included.

Run in a child interpreter of its own, so the sweep sees only the process tree the test builds (a
pytest worker has children of its own that are not the test's to stop).
"""

from __future__ import annotations

import json
import subprocess
import sys

SWEEP = r"""
import json, os, signal, subprocess, sys, time
from pathlib import Path
from sciagent.workflows.jobs.children import descendants, stop_descendants

stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
tree = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {stubborn!r}]); time.sleep(99)"
parent = subprocess.Popen([sys.executable, "-c", tree])
deadline = time.monotonic() + 30
while len(descendants(os.getpid())) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.5)  # the grandchild has set its disposition
found = descendants(os.getpid())
grandchild = [pid for pid in found if pid != parent.pid][0]
os.kill(grandchild, signal.SIGTERM)  # the control: SIGTERM alone leaves it running
time.sleep(0.5)
survived_sigterm = Path(f"/proc/{grandchild}").exists()
stopped = stop_descendants(os.getpid(), grace_s=1.0)
alive = [pid for pid in found if Path(f"/proc/{pid}/stat").exists()
         and Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"]  # fmt: skip
report = {"found": len(found), "survived_sigterm": survived_sigterm, "stopped": stopped, "alive": alive}
print(json.dumps(report))
"""


def test_every_descendant_is_stopped_even_one_that_ignores_sigterm() -> None:
    done = subprocess.run([sys.executable, "-c", SWEEP], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["found"] == 2
    assert report["survived_sigterm"] is True  # without the sweep's SIGKILL it would be left behind
    assert len(report["stopped"]) == 2 and all(" python" in entry for entry in report["stopped"])
    assert report["alive"] == []
