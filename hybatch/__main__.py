"""``python -m hybatch`` is the ``hybatch`` command (used to start worker subprocesses)."""

from hybatch.cli import app

app(prog_name="hybatch")
