"""What a sweep prints: the launchers' "#3 : x=... y=..." lines without the trial link's internal
``++hydra.job.env_set.DERMSWEEP_*`` overrides (about 400 characters a trial; the job still gets them)."""

from __future__ import annotations

import logging
import re

# one `++hydra.job.env_set.DERMSWEEP_...=value` override, its value quoted ('...' with \' inside) or bare
_LINK_OVERRIDE = re.compile(r"\s*\+\+hydra\.job\.env_set\.DERMSWEEP_\w+=(?:'(?:[^'\\]|\\.)*'|\S+)")


class HideLinkOverrides(logging.Filter):
    """Drops the trial link's overrides from a log record's message (any launcher that lists a job's overrides)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        if "hydra.job.env_set.DERMSWEEP_" in message:
            record.msg, record.args = strip(message), ()
        return True


def strip(text: str) -> str:
    return _LINK_OVERRIDE.sub("", text)


_HIDE = HideLinkOverrides()


def hide_link_overrides(launcher: object) -> None:
    """Before a launch: the launcher's own logger and Hydra's hide them. On loggers, not handlers, because a
    launcher reconfigures logging (new handlers) when it starts; a logger keeps its filters. Idempotent."""
    names = [type(launcher).__module__, *(n for n in logging.Logger.manager.loggerDict if n.startswith(_HYDRA))]
    for name in names:
        logger = logging.getLogger(name)
        if _HIDE not in logger.filters:
            logger.addFilter(_HIDE)


_HYDRA = ("hydra.", "hydra_plugins.")
