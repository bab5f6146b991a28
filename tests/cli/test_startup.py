"""Building the command line loads none of the heavy libraries: `dawn-train --help`, a usage error and every
command's option parsing answer in a fraction of a second, and a run that is killed early (a launch deadline)
has already started its work instead of still importing.  Each command imports what it runs when it runs.  (numpy,
~0.1 s, is allowed: the data schema's constants come with it.)"""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "lightning", "transformers", "torchmetrics", "wandb", "deepspeed", "cv2", "av")


def test_building_the_parser_imports_no_heavy_library():
    code = ("import json, sys\n"
            "from dawn_train.cli import build_parser\n"
            "parser = build_parser()\n"
            "for argv in (['generate', '--image', 'i.png', '--audio', 'a.wav', '--out', 'o.mp4', '--window-size', 'none'],\n"
            "             ['eval', '--ckpt', 'c', '--lfg', 'l', '--shards', 's'], ['data', 'shards', '--features', 'logmel',\n"
            "             '--src', 'p', '--out', 'o'], ['bench', 'cases', '--attn-backend', 'sdpa']):\n"
            "    parser.parse_args(argv)\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
