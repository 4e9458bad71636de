"""What the redesigned pages say, over HTTP: charts with scales, one button per thing, plain words."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

from jobstead.dashboard.depth import queue_depth
from tests.dashboard.conftest import Shop, TestClient

MakeClient = Callable[..., TestClient]


def buttons(html: str, action: str) -> list[str]:
    """The ``name`` field of every form whose button is ``data-action=action``."""
    forms = re.findall(r"<form method=\"post\".*?</form>", html, flags=re.S)
    return [
        re.search(r'name="name" value="([^"]*)"', form).group(1)  # type: ignore[union-attr]
        for form in forms
        if f'data-action="{action}"' in form
    ]


def test_the_overview_has_labelled_charts_and_one_button_per_handler_and_queue(
    shop: Shop, make_client: MakeClient
) -> None:
    shop.app.handlers["send_email"].configure(queue="bulk").defer(to="x@example.com")
    shop.app.handlers["send_email"].defer(to="y@example.com")
    html = make_client(shop.app).get("/").text
    # two charts, each with its scale and its times written as text
    for chart in ("chart-finished", "chart-depth"):
        section = html.split(f'id="{chart}"')[1].split("</figure>")[0]
        ticks = re.findall(r'<text class="tick"[^>]*>([^<]+)</text>', section)
        assert "0" in ticks and "now" in ticks and any(re.fullmatch(r"\d\d:\d0", t) for t in ticks), ticks
    assert "The charts' numbers, minute by minute" in html
    # "Pause queue" once per queue, "Pause" once per handler, though send_email has rows in two queues
    for queue in ("bulk", "mail"):
        assert f'data-handler="send_email" data-queue="{queue}"' in html
    assert sorted(buttons(html, "pause queue")) == ["bulk", "default", "mail", "reports"]
    assert sorted(buttons(html, "pause")) == ["charge_card", "rebuild_report", "send_email"]
    assert "No sign-in (local access)" in html and "authentication off" in html
    assert "Failed, dead and cancelled jobs count per handler" not in html
    assert "jobs table holds" in html


def test_queue_depth_counts_waiting_jobs_minute_by_minute(shop: Shop) -> None:
    store = shop.app.store
    now = store.clock()
    start = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    before = queue_depth(store, start, now)
    shop.app.handlers["send_email"].defer_many([{"to": f"u{i}@example.com"} for i in range(5)])
    after = queue_depth(store, start, store.clock())
    assert len(after) == 60
    assert after[-1] == before[-1] + 5
    # the seeded jobs that already ran waited less than a minute, and the scheduled one is not due
    assert after[-1] == 6  # the five above and the seed's waiting welcome mail
