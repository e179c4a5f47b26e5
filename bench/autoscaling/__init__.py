"""Fleet simulator benchmark for the load-time-aware autoscaler (see run.py)."""
