"""An app whose handler asks for a resource the app never declares (issue 18, bug 8)."""

from __future__ import annotations

from typing import Annotated

from jobstead import App, Inject

app = App()


class Mailer:
    def send(self, to: str) -> None: ...


@app.handler
def notify(to: str, mailer: Annotated[Mailer, Inject("mailer")]) -> None:
    mailer.send(to)
