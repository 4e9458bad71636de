"""Jobstead: persistent background jobs stored in your application's own database."""
