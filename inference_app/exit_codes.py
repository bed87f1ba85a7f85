"""Exit codes of `gpuscale serve`, one meaning each (documented in the README)."""

EXIT_OK = 0
EXIT_USAGE = 2  # bad flags or settings, busy port, or a model that cannot load: fix the configuration
EXIT_DRAIN_INCOMPLETE = 4  # some admitted requests were answered 503 because the drain deadline came first
