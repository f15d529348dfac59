"""How the platform runs: settings, local up/down, Serve config, the `o2o` command line."""
