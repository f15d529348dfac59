"""Load tests and the city simulator. Never imported by a process that imports ray."""
