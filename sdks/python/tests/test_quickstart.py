"""The README's quickstart, run as written: its `herald.toml` block is the config of a fresh
`herald serve`, its Python block runs in a subprocess against it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from .conftest import start_herald

README = Path(__file__).resolve().parent.parent / "README.md"


def block(lang: str, text: str) -> str:
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    found = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert found, f"no {lang} block in the README's quickstart"
    return found.group(1)


def test_the_readme_quickstart_runs() -> None:
    text = README.read_text()
    workdir = Path(tempfile.mkdtemp(prefix="herald-py-quickstart-"))
    server = start_herald(workdir, config=block("toml", text))
    try:
        code = workdir / "quickstart.py"
        code.write_text(block("python", text))
        run = subprocess.run(
            [sys.executable, str(code)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HERALD_URL": server.url, "HERALD_ADMIN_KEY": server.admin_key},
        )
        assert run.returncode == 0, run.stderr
        assert "started operations/op_" in run.stdout
        assert "done: {'video_id': 'vid_99', 'source': 'https://example.com/meeting.mp4'}" in run.stdout
    finally:
        server.process.kill()
        server.process.wait()
