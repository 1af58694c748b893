"""Caching and CDN layer of the learning platform: a pure core plus a thin Pulumi shell.

The core (settings, topology, render, commands) imports no Pulumi module, so the local
sandbox, the integration tests and the Pulumi components all share it.
"""

PROJECT = "cachelayer"
