"""The thread governor gives torch the cores other processes leave free, and nothing else changes it."""

import pytest
import torch

from milkit import threads
from milkit.errors import UsageError


class FakeMachine:
    """A 2-core machine whose other processes use ``others`` cores; this process uses ``mine``."""

    def __init__(self, monkeypatch) -> None:
        self.t, self.busy, self.own, self.others, self.mine = 0.0, 0.0, 0.0, 0.0, 1.0
        monkeypatch.setattr(threads, "available_cores", lambda: 2)
        monkeypatch.setattr(threads.time, "monotonic", lambda: self.t)
        monkeypatch.setattr(threads, "_busy_seconds", lambda: (self.busy, self.own))

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.busy += (self.others + self.mine) * seconds
        self.own += self.mine * seconds


@pytest.fixture
def machine(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv(threads.ENV_THREADS, raising=False)
    yield FakeMachine(monkeypatch)
    torch.set_num_threads(before)


def test_threads_follow_the_free_cores(machine):
    gov = threads.ThreadGovernor()
    assert gov.threads == 2 and torch.get_num_threads() == 2
    machine.others = 1.0                      # another process takes a core
    machine.advance(0.5)
    assert gov.tick() == 2                    # not yet time to look
    machine.advance(1.0)
    assert gov.tick() == 1 and torch.get_num_threads() == 1
    machine.others = 0.1                      # it ends: the threads come back
    machine.advance(1.5)
    assert gov.tick() == 2 and torch.get_num_threads() == 2
    machine.others = 5.0                      # a heavily loaded machine still gets one thread
    machine.advance(1.5)
    assert gov.tick() == 1


def test_a_fixed_count_is_never_changed(machine, monkeypatch):
    gov = threads.ThreadGovernor(requested=2)
    machine.others = 2.0
    machine.advance(3.0)
    assert gov.tick() == 2
    monkeypatch.setenv(threads.ENV_THREADS, "1")
    assert threads.ThreadGovernor().fixed == 1 and torch.get_num_threads() == 1


@pytest.mark.parametrize("value", ["0", "-2", "all", "1.5"])
def test_a_bad_milkit_threads_is_a_usage_error(machine, monkeypatch, value):
    monkeypatch.setenv(threads.ENV_THREADS, value)
    with pytest.raises(UsageError, match="MILKIT_THREADS"):
        threads.ThreadGovernor()


def test_the_real_proc_counters_are_read():
    sample = threads._busy_seconds()
    assert sample is None or (sample[0] >= sample[1] >= 0)


def test_a_deterministic_governor_decides_once(machine):
    machine.others = 1.0
    gov = threads.ThreadGovernor(adapt=False)   # the first look sees nothing yet (time stands still here)
    assert gov.fixed == gov.threads == 2
    machine.advance(3.0)
    assert gov.tick() == 2                      # never changes afterwards


def test_a_resumed_run_keeps_its_checkpoints_count(machine):
    threads.govern()
    threads.govern(1)                           # what the trainer does with the count in last.json
    machine.others = 0.0
    machine.advance(3.0)
    threads.tick()
    assert torch.get_num_threads() == 1


def test_a_run_on_fewer_threads_says_why(machine):
    machine.others = 1.0
    gov = threads.ThreadGovernor(adapt=False)
    gov._set(1)                                 # as if the first look had seen the busy core
    note = threads.explain_choice(gov)
    assert "1 of 2 cores busy" in note and "kept for the whole run" in note and "[run] threads" in note
    assert threads.explain_choice(threads.ThreadGovernor(requested=1)) is None   # the user's choice
