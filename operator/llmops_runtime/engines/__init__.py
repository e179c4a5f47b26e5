"""Training engines other than plain DDP (imported only by jobs that use them)."""
