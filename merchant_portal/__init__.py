"""Merchant portal: the tablet web app (a Flask blueprint)."""
