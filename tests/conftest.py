pytest_plugins = ["llmops.sandbox.testing"]
