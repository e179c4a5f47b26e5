"""Code that runs inside the workload pods (trainer and server images). Never imports kopf."""
