"""Load tests, benchmarks and the city simulator.

Locust files are never imported by a process that imports ray (locust patches the
process with gevent); the benchmark drivers here start the platform themselves.
"""
