"""Observed facts: plain data parsed from API objects (pods, nodes, progress Leases), no client."""
