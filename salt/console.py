"""What `salt` prints besides its own results: log format, each fact once, known noise silenced.

Messages reach the user by two roads: Python's `logging` (salt's own warnings) and Python's
`warnings` (Lightning's and torch's hints, and salt's own where a library user should be able to
catch them). Both end in one handler on stderr, as ``LEVEL module: message``, and a message
already shown is not shown again, whichever road it took.

Silenced outright are notices that are true but useless to a salt user, each named below with
the reason.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

# (message regex, why a salt user gains nothing from it)
KNOWN_NOISE = (
    (".*LeafSpec.*", "a torch deprecation inside Lightning's internals"),
    (".*is smaller than the logging interval.*", "short test runs log less often; harmless"),
    # salt moves a restarted run's earlier metrics.csv aside (callbacks/runfolder.py)
    (".*Previous log files in this directory will be.*", "handled by salt"),
    # salt's own advice on data.num_workers says the same with the option to change
    (".*This DataLoader will create .* worker processes in total.*", "said by salt"),
    # submit/submit_slurm.sh starts every rank with srun; outside it, salt runs one process
    (".*The `srun` command is available on your system but is not used.*", "handled by salt"),
    # a resume writes into a new run folder by design; the best checkpoint path is kept
    (".*The dirpath has changed from.*", "by design: a resumed run has its own folder"),
)

QUIET_LOGGERS = (
    "lightning.fabric",
    "lightning.pytorch.utilities.rank_zero",
    "matplotlib",
    # "NumExpr defaulting to N threads." on every import through puma/pandas
    "numexpr",
)


class OncePerMessage(logging.Filter):
    """Lets each distinct (level, message) through once per process."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage().strip())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def module_name(filename: str) -> str:
    """`.../site-packages/torch/utils/data/dataloader.py` -> `torch.utils.data.dataloader`."""
    path = Path(filename).resolve()
    best = ""
    for entry in sys.path:
        try:
            root = str(Path(entry or ".").resolve())
        except OSError:
            continue
        if str(path).startswith(root + "/") and len(root) > len(best):
            best = root
    if not best:
        return path.stem
    return ".".join(path.relative_to(best).with_suffix("").parts)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.showwarning` replacement: one log line, no source line, each message once."""
    name = module_name(filename)
    text = str(message).strip()
    if category is not UserWarning:
        # e.g. PossibleUserWarning: its name tells a reader how seriously to take it
        text = f"{category.__name__}: {text}"
    logging.getLogger(name).warning(text)


def setup() -> None:
    """Configure logging and warnings for a `salt` command (the entry point calls it once)."""
    for pattern, _why in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    once = OncePerMessage()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, OncePerMessage) for f in handler.filters):
            handler.addFilter(once)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.showwarning = _show_warning
