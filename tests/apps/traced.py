"""An app for the tracing tests: its workers export spans, as JSON lines, to ``$JOBSTEAD_TEST_SPANS``.

The OpenTelemetry SDK is configured the way an app would (a global
``TracerProvider`` at import), with the SDK's own console exporter pointed at
a file the test reads.
"""

from __future__ import annotations

import json
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from jobstead import App, Context

_spans = os.environ.get("JOBSTEAD_TEST_SPANS")
if _spans:

    def _one_line(span: ReadableSpan) -> str:
        return json.dumps(json.loads(span.to_json())) + "\n"

    provider = TracerProvider()
    out = open(_spans, "a", buffering=1)  # noqa: SIM115 - open for the life of the process
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=_one_line)))
    trace.set_tracer_provider(provider)

app = App()


@app.handler
def traced_work(n: int) -> int:
    with trace.get_tracer("tests").start_as_current_span("inside the handler"):
        return n


@app.handler(max_attempts=2, retry=0)
def traced_flaky(n: int, ctx: Context) -> int:
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return n
