"""``python -m bench``: run everything and print the table."""

from .run import run

run()
