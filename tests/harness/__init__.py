"""Real-registry test harness, shared by the tests, the demo and the benchmark."""
