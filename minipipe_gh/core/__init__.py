"""The pure core: command grammar, state tables, policy, who may act, what waits, what
the check run says. No I/O: nothing here imports Flask, Werkzeug, SQLAlchemy, PyGithub
or requests, directly or through another module (``tests/test_layers.py``)."""
