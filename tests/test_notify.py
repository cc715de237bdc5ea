"""On-call notifications: failures and promotion decisions reach a real (local) SMTP server."""

from __future__ import annotations

import email
import json
import logging
import socketserver
import threading
from email.message import Message
from types import SimpleNamespace
from typing import Iterator

import pytest

from ecat_tasks.airflow_edge import notify_promotion, on_failure
from ecat_tasks.models.health import ModelHealthError


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) to accept a message: EHLO, MAIL, RCPT, DATA, QUIT."""

    def handle(self) -> None:
        self._reply("220 ecat-test ESMTP")
        rcpt: list[str] = []
        while line := self.rfile.readline():
            verb = line.decode().strip().split(" ", 1)[0].upper()
            if verb == "EHLO":
                self._reply("250-ecat-test", "250 8BITMIME")
            elif verb == "RCPT":
                rcpt.append(line.decode().split(":", 1)[1].strip())
                self._reply("250 OK")
            elif verb == "DATA":
                self._reply("354 end with <CRLF>.<CRLF>")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                self.server.messages.append((rcpt, email.message_from_bytes(b"".join(data))))
                self._reply("250 OK queued")
            elif verb == "QUIT":
                self._reply("221 bye")
                return
            else:  # HELO, MAIL, RSET, NOOP
                self._reply("250 OK")

    def _reply(self, *lines: str) -> None:
        self.wfile.write("".join(f"{x}\r\n" for x in lines).encode())


@pytest.fixture()
def smtp_server() -> Iterator[socketserver.ThreadingTCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler)
    server.daemon_threads = True
    server.messages = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _connection(monkeypatch: pytest.MonkeyPatch, port: int, **extra: object) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ECAT_SMTP", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"to": "oncall@example.com", "from_email": "ecat@example.com", "disable_tls": True,
                  "disable_ssl": True, "timeout": 5, "retry_limit": 1, **extra},
    }))


def _text(msg: Message) -> str:
    return "".join(p.get_payload(decode=True).decode() for p in msg.walk() if p.get_content_type() == "text/html")


def _failure_context() -> dict:
    ti = SimpleNamespace(dag_id="ecat_daily", task_id="teacher_refresh", try_number=1, log_url="http://airflow/log/1")
    exc = ModelHealthError("teacher ds=2026-03-02 loss is nan from epoch 1 of 3: training diverged; the model was not published")
    return {"task_instance": ti, "exception": exc, "ds": "2026-03-02"}


def test_failure_mails_the_on_call_line(smtp_server, monkeypatch, caplog):
    _connection(monkeypatch, smtp_server.server_address[1])
    with caplog.at_level(logging.INFO, logger="ecat_tasks"):
        on_failure(_failure_context())
    assert "ECAT FAILURE dag=ecat_daily task=teacher_refresh ds=2026-03-02 try=1 error=ModelHealthError" in caplog.text
    [(rcpt, msg)] = smtp_server.messages
    assert rcpt == ["<oncall@example.com>"] and msg["To"] == "oncall@example.com" and msg["From"] == "ecat@example.com"
    assert msg["Subject"] == "ECAT FAILURE teacher_refresh ds=2026-03-02: ModelHealthError"
    body = _text(msg)
    assert "error=ModelHealthError: teacher ds=2026-03-02 loss is nan from epoch 1 of 3" in body
    assert "what to do: the model trained today is broken" in body and "http://airflow/log/1" in body


def test_promotion_decision_is_mailed(smtp_server, monkeypatch):
    _connection(monkeypatch, smtp_server.server_address[1])
    notify_promotion("2026-03-02", {"promoted": False, "reason": "student AUC 0.6100 does not beat target_only 0.6200 by more than 0.0000"})
    notify_promotion("2026-03-03", {"promoted": True, "version": "4", "reason": "student AUC 0.6400 beats target_only 0.6200"})
    (_, refused), (_, promoted) = smtp_server.messages
    assert refused["Subject"] == "ECAT promote ds=2026-03-02: NOT promoted"
    assert "does not beat target_only 0.6200" in _text(refused)
    assert promoted["Subject"] == "ECAT promote ds=2026-03-03: PROMOTED version 4"


def test_no_connection_sends_nothing(smtp_server, monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_ECAT_SMTP", raising=False)
    with caplog.at_level(logging.INFO, logger="ecat_tasks"):
        on_failure(_failure_context())
    assert smtp_server.messages == []
    assert "no Airflow connection 'ecat_smtp': on-call notification not sent" in caplog.text
    assert "ECAT FAILURE dag=ecat_daily" in caplog.text


def test_unreachable_mail_server_never_masks_the_failure(monkeypatch, caplog):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _connection(monkeypatch, port, timeout=2)
    with caplog.at_level(logging.INFO, logger="ecat_tasks"):
        on_failure(_failure_context())  # does not raise
    assert "ECAT FAILURE dag=ecat_daily" in caplog.text
    assert "on-call notification 'ECAT FAILURE teacher_refresh ds=2026-03-02: ModelHealthError' could not be sent" in caplog.text
