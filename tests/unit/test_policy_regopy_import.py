"""regopy is imported without starting `uname -p` (7 ms of every CLI start-up), and platform is left as it was."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, subprocess, sys
started = []
real = subprocess.Popen.__init__
def spy(self, args, *a, **k):
    started.append(str(args))
    return real(self, args, *a, **k)
subprocess.Popen.__init__ = spy
from agentfactory.policy import _import_regopy
regopy = _import_regopy()
during = list(started)
import platform
left = "processor" in platform.uname().__dict__
again = _import_regopy() is regopy
processor = platform.processor()  # now computed as platform always does
print(json.dumps({"during": during, "left": left, "again": again, "processor": processor,
                  "regopy": "regopy" in sys.modules}))
"""


def test_regopy_is_imported_without_a_child_process_and_platform_is_untouched() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    assert doc["regopy"] and doc["again"]
    assert doc["during"] == [], doc["during"]  # no child process while importing (it was `uname -p`)
    assert doc["left"] is False  # the import's stand-in value was forgotten
    real = subprocess.run(["uname", "-p"], capture_output=True, text=True).stdout.strip()
    assert doc["processor"] == ("" if real == "unknown" else real)
