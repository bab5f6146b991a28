"""DAWN_TRAIN_STACKS_ON: a run that seems stuck prints every thread's Python stack on that signal and goes on
(the launch tests send it to every rank before they kill a run past its deadline)."""
from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import time

import pytest

from dawn_train.cli import register_stack_dump

WAITING = """
from dawn_train.cli import register_stack_dump
import time
register_stack_dump()
def waiting_for_peers():
    print("ready", flush=True)
    time.sleep(60)
waiting_for_peers()
"""


def test_the_signal_prints_the_stack_and_the_process_goes_on():
    proc = subprocess.Popen([sys.executable, "-c", WAITING], env={**os.environ, "DAWN_TRAIN_STACKS_ON": "SIGUSR2"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGUSR2)
        time.sleep(1.0)
        assert proc.poll() is None  # still running
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert "most recent call first" in err and "waiting_for_peers" in err


@pytest.mark.parametrize("value", ["SIGUSR1", "SIGKILL", "SIGINT", "SIGTERM", "SIGSEGV", "NOSUCH"])
def test_an_unusable_signal_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv("DAWN_TRAIN_STACKS_ON", value)
    with pytest.raises(SystemExit, match=f"DAWN_TRAIN_STACKS_ON='{value}'"):
        register_stack_dump()


def test_unset_registers_nothing_and_a_name_without_sig_is_taken(monkeypatch):
    monkeypatch.delenv("DAWN_TRAIN_STACKS_ON", raising=False)
    register_stack_dump()
    assert faulthandler.unregister(signal.SIGUSR2) is False  # nothing was registered
    monkeypatch.setenv("DAWN_TRAIN_STACKS_ON", "usr2")
    register_stack_dump()
    assert faulthandler.unregister(signal.SIGUSR2) is True
