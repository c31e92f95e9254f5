"""DeferredCtrlC: the first Ctrl-C while an answer streams waits for the step boundary, a second one raises."""

import os
import signal

import pytest

from mlx_specdec.cli.ctrl_c import DeferredCtrlC


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)  # the handler runs before os.kill returns to Python code


@pytest.fixture
def python_handles_ctrl_c():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_the_first_ctrl_c_waits_for_the_check_and_the_handler_is_restored(python_handles_ctrl_c):
    with DeferredCtrlC() as deferred:
        ctrl_c()
        assert deferred.requested  # taken, not raised mid-step
        with pytest.raises(KeyboardInterrupt):
            deferred.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        ctrl_c()  # outside the stream Ctrl-C raises as usual


def test_a_second_ctrl_c_raises_at_once(python_handles_ctrl_c):
    with DeferredCtrlC() as deferred:
        ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            ctrl_c()
        assert deferred.requested


def test_a_check_without_ctrl_c_passes_and_an_ignored_ctrl_c_stays_ignored(python_handles_ctrl_c):
    with DeferredCtrlC() as deferred:
        deferred.check()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with DeferredCtrlC() as deferred:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        ctrl_c()
        deferred.check()  # nothing was asked for
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
