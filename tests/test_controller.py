"""The outer loop (trainer.controller) driven by fakes: calls end exactly at every
event, events land on their steps, eval actions stop training, the guard's stop
names the last good checkpoint, and a signal saves before it stops."""

import math
import os
import signal

import pytest

from trainer.controller import Controller
from trainer.errors import NonFiniteError, TrainingStopped


class FakeTrainer:
    """Counts steps; records each call's length; can fail or signal at a step."""

    batch_size = 4

    def __init__(self, fail_at=None, signal_at=None):
        self.step = 0
        self.calls = []
        self.fail_at = fail_at
        self.signal_at = signal_at
        self._since_read = 0

    def train(self, num_steps):
        self.calls.append((self.step, num_steps))
        if self.fail_at is not None and self.step < self.fail_at <= self.step + num_steps:
            self.step = self.fail_at
            raise NonFiniteError(
                f"non-finite loss at step {self.fail_at}; last good: {{checkpoint}}"
            )
        self.step += num_steps
        self._since_read += num_steps
        if self.signal_at is not None and self.step >= self.signal_at:
            self.signal_at = None
            os.kill(os.getpid(), signal.SIGTERM)

    def metrics(self):
        steps, self._since_read = self._since_read, 0
        return {"loss": 1.0 / (1 + self.step), "accuracy": 0.5, "learning_rate": 0.1, "n": steps}


class FakeEvaluator:
    def __init__(self, trainer):
        self.trainer = trainer
        self.steps = []

    def evaluate(self):
        self.steps.append(self.trainer.step)
        return {"loss": 1.0, "accuracy": 0.5, "count": 10}


class FakeCheckpoints:
    def __init__(self):
        self.saved = []
        self.latest_step = None

    @property
    def latest(self):
        return None if self.latest_step is None else f"ckpt-{self.latest_step}"

    def save(self, step):
        self.saved.append(step)
        self.latest_step = step


def _controller(trainer=None, **cadences):
    trainer = trainer or FakeTrainer()
    evaluator = FakeEvaluator(trainer)
    checkpoints = FakeCheckpoints()
    options = {"steps_per_loop": 10, "log_every": 7, **cadences}
    controller = Controller(trainer, evaluator, checkpoints, None, **options)
    return controller, trainer, evaluator, checkpoints


def test_calls_end_at_every_event_and_events_land_on_their_steps():
    controller, trainer, evaluator, checkpoints = _controller(
        checkpoint_every=12, eval_every=9, summary_every=5
    )
    assert controller.train(30) == "steps_done"
    ends = [start + count for start, count in trainer.calls]
    events = {1, 30}
    for every in (7, 12, 9, 5):
        events |= set(range(every, 30, every))
    assert set(ends) == events  # a call ends at every event, and only there
    assert all(count <= 10 for _, count in trainer.calls)  # at most steps_per_loop
    assert evaluator.steps == [9, 18, 27]  # not 30: the final evaluation is the caller's
    assert checkpoints.saved == [12, 24, 30]  # and the last step, once
    assert trainer.step == 30


def test_progress_reads_the_trainers_metrics_once_per_log_line():
    controller, _, _, _ = _controller(steps_per_loop=3, log_every=6)
    controller.train(20)
    assert controller.last_train["n"] == 2  # steps 19-20, read at the last step
    assert math.isfinite(controller.examples_per_sec())
    assert controller.first_call_seconds is not None


def test_an_eval_action_stops_training_with_its_reason():
    seen = []

    def stop_at_the_third(step, metrics):
        seen.append((step, metrics["loss"]))
        return "early_stop" if len(seen) == 3 else None

    controller, trainer, _, checkpoints = _controller(
        eval_every=4, eval_actions=[stop_at_the_third]
    )
    assert controller.train(100) == "early_stop"
    assert [step for step, _ in seen] == [4, 8, 12]
    assert trainer.step == 12 and checkpoints.saved == [12]


def test_the_guards_stop_names_the_last_good_checkpoint_and_saves_nothing():
    controller, _, _, checkpoints = _controller(FakeTrainer(fail_at=15), checkpoint_every=10)
    with pytest.raises(NonFiniteError, match="at step 15; last good: ckpt-10$"):
        controller.train(30)
    assert checkpoints.saved == [10]


def test_a_signal_saves_the_step_reached_and_stops():
    controller, trainer, _, checkpoints = _controller(FakeTrainer(signal_at=8))
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped) as stopped:
        controller.train(30)
    assert stopped.value.signum == signal.SIGTERM
    assert checkpoints.saved == [trainer.step] and trainer.step < 30
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is put back


def test_nothing_to_train_saves_the_current_step_once():
    controller, trainer, _, checkpoints = _controller()
    trainer.step = 5
    checkpoints.latest_step = 5
    assert controller.train(5) == "steps_done"
    assert trainer.calls == [] and checkpoints.saved == []
