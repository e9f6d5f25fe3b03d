"""Fitting the learning-rate schedule to train.max_minutes (Trainer._budget_fit), with the clock readings the trainer passes in."""
import types

from xasr import trainer as T


def _stub(planned):
    s = types.SimpleNamespace(step=0, total_steps=planned, planned_steps=planned)
    s._fit_schedule_to_budget = types.MethodType(T.Trainer._fit_schedule_to_budget, s)
    s._budget_fit = types.MethodType(T.Trainer._budget_fit, s)
    return s


def _run(startup, per_step, budget, planned=100000):
    """Steps until the schedule ends or the budget is spent; returns (steps, seconds)."""
    s = _stub(planned)
    fit = None
    now = startup  # loading before the first step
    while s.step < s.total_steps and now < budget:
        now += per_step
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
