"""What the InferenceService reconcile runs against serving pods: the builtin autoscaler's
runner and the adapter-agent client (both speak HTTP to pod IPs, ``podhttp``)."""
