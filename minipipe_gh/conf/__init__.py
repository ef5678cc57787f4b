"""Settings and start-up: environment and ``.env``, the files that travel with the
code, the checks that stop a misconfigured start with one message."""
