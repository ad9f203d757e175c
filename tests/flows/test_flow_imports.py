"""The flow process plans, waits and reports; the heavy libraries load in the Ray workers that run items. Importing
torch alone takes ~500 MB of resident memory, so the modules a mining flow imports must not import it."""

import subprocess
import sys


def test_the_mining_flow_process_imports_no_torch():
    code = ("import sys, flows.pipelines, flows.cli, stages.registry, store.shards, store.set_report\n"
            "from schemas.config import RunConfig\n"
            "from stages.registry import STAGES\n"
            "heavy = [m for m in ('torch', 'webdataset', 'open_clip', 'transformers', 'diffusers') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
