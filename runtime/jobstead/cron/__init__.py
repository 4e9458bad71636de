"""Cron jobs: schedules (pure) and the scheduler that turns fire times into jobs.

Only the schedule is imported here, so the store can use it without pulling in
the scheduler (which itself depends on the store).
"""

from .schedule import PRESETS, CronSchedule, InvalidSchedule

__all__ = ["PRESETS", "CronSchedule", "InvalidSchedule"]
