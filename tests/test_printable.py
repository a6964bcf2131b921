"""One rule escapes what a client or a file sent before it reaches a terminal: the CLI, the web app's log and
`dermsweep serve`'s log all show control characters and bidi overrides as escapes and keep printable text."""

from __future__ import annotations

import logging

from dermsweep.cli.console import printable as cli_printable
from dermsweep.printable import printable
from dermsweep.shipping.rest_server import _log_escaped
from dermsweep.web.app import Doors

HOSTILE = "GET /caf\u00e9/\u5f71\x1b[2J\x07\r\u202etxt.exe\udcff"
SHOWN = "GET /caf\u00e9/\u5f71\\x1b[2J\\x07\\x0d\\u202etxt.exe\\xff"


def test_controls_bidi_and_undecodable_bytes_are_escaped_and_printable_text_kept():
    assert printable(HOSTILE) == SHOWN
    assert printable("plain text, 100%") == "plain text, 100%"


def test_the_cli_the_web_log_and_the_serve_log_use_the_one_rule(capsys, caplog):
    assert cli_printable is printable
    Doors(app=None, names=set()).log(HOSTILE)
    assert capsys.readouterr().err == SHOWN + "\n"
    with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
        _log_escaped(HOSTILE)
    assert caplog.messages == [SHOWN]
