"""Fault-injection tests: their own redis-server and a cuttable TCP proxy in front of PostgreSQL."""
