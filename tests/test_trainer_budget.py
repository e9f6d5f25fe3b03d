"""Fitting the learning-rate schedule to train.max_minutes (Trainer._budget_fit), with the clock readings the trainer passes in."""
import logging
import types

from xasr import trainer as T


def _stub(planned):
    s = types.SimpleNamespace(step=0, total_steps=planned, planned_steps=planned)
    s._fit_schedule_to_budget = types.MethodType(T.Trainer._fit_schedule_to_budget, s)
    s._budget_fit = types.MethodType(T.Trainer._budget_fit, s)
    return s


def _run(startup, per_step, budget, planned=100000):
    """Steps until the schedule ends or the budget is spent; returns (steps, seconds). per_step:
    seconds, or a function of the clock giving them."""
    s = _stub(planned)
    fit = None
    now = startup  # loading before the first step
    while s.step < s.total_steps and now < budget:
        now += per_step(now) if callable(per_step) else per_step
        s.step += 1
        fit = s._budget_fit(fit, now, 0.0, 0, budget)
    return s.step, now


def test_slow_start_does_not_end_the_schedule_early():
    # 18 s of start-up then 0.05 s per step: the first fit (after 20 steps) sees 0.95 s per step
    steps, seconds = _run(startup=18.0, per_step=0.05, budget=150.0)
    assert seconds > 0.8 * 150  # the run uses its budget ...
    assert steps > 2000  # ... at the real step time, not the first estimate (about 140 steps)


def test_schedule_ends_within_the_budget():
    steps, seconds = _run(startup=1.0, per_step=0.1, budget=60.0)
    assert seconds <= 60.0 and steps < 600


def test_schedule_never_grows_beyond_the_planned_steps():
    steps, _ = _run(startup=0.0, per_step=0.01, budget=600.0, planned=500)
    assert steps == 500


def test_a_run_slowed_down_by_another_process_warns(caplog):
    # 0.1 s a step, then 0.4 s from the middle of the budget on (another process took the cores)
    with caplog.at_level(logging.WARNING, logger=T.logger.name):
        _run(startup=2.0, per_step=lambda now: 0.1 if now < 300 else 0.4, budget=600.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all("4.0x" in w and "fewer steps" in w for w in warnings)


def test_a_steady_run_with_a_slow_start_does_not_warn(caplog):
    with caplog.at_level(logging.WARNING, logger=T.logger.name):
        _run(startup=18.0, per_step=lambda now: 0.15 if now < 60 else 0.1, budget=600.0)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_slowdown_message():
    assert T.slowdown_message(0.19, 0.1) is None
    assert T.slowdown_message(0.5, float("inf")) is None  # nothing to compare with yet
    assert "5.0x the 0.100 s" in T.slowdown_message(0.5, 0.1)
