"""What every HTTP server of mistralkit shares (``serve``, ``datagen serve``).

``protocol.deadline_protocol(seconds)``: uvicorn's HTTP/1.1 protocol with a deadline on a request's
headers (uvicorn has none: a client that sends half a request line keeps its connection forever).
``runner.bind`` / ``runner.run``: the socket bound before anything is announced (a busy port is a
one-line error), then uvicorn with that protocol, exiting 0 on SIGTERM/SIGINT.
``keys.read_keys``: API keys or tokens from a flag, the environment and a key file, checked.
"""
