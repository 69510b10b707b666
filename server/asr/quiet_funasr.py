"""Keep funasr's start-up notices, which do not apply to this server, out of its output.

funasr prints, when first imported, that ffmpeg is not installed and how to install it; the
server decodes audio with PyAV, which bundles FFmpeg, so no ffmpeg is needed. And it logs, on the
root logger (so no logger level can turn it down), its progress while a model loads ("download
models from model hub: ms" even for a local directory, the checkpoint it reads, ...) and that
trust_remote_code is False; the server logs which model it loaded from where itself.

Importing this module does it, once, before funasr is imported: the adapter and the tiny model
builder import it first. Anything else funasr prints or logs still comes through.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys

# Lines of funasr's import-time notice; each names ffmpeg.
_FFMPEG_NOTICE = "ffmpeg"
# Warnings funasr logs on every load that state a default rather than a problem.
_NOTED_DEFAULTS = ("trust_remote_code: False",)


class FunasrChatter(logging.Filter):
    """Drops funasr's own records below WARNING, and its warnings that only state a default."""

    def __init__(self, package_dir: str):
        super().__init__()
        self.package_dir = package_dir

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.pathname.startswith(self.package_dir):
            return True
        return record.levelno >= logging.WARNING and record.getMessage() not in _NOTED_DEFAULTS


def _import_funasr_without_the_ffmpeg_notice() -> None:
    """Import funasr's audio loader (whose import prints the notice), passing on any other output."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        import funasr.utils.load_utils  # noqa: F401 - imported here for the notice its import prints
    kept = [line for line in captured.getvalue().splitlines(keepends=True) if _FFMPEG_NOTICE not in line]
    sys.stdout.write("".join(kept))


def silence_funasr_notices() -> None:
    if "funasr.utils.load_utils" not in sys.modules:  # else imported already: its notice is out
        _import_funasr_without_the_ffmpeg_notice()
    import funasr

    root = logging.getLogger()
    if not any(isinstance(f, FunasrChatter) for f in root.filters):
        # A root logger's own filters see exactly the records logged with logging.info(...) and the like.
        root.addFilter(FunasrChatter(os.path.dirname(funasr.__file__) + os.sep))


silence_funasr_notices()
