"""What every HTTP server of mistralkit shares (``serve``, ``datagen serve``).

``protocol.deadline_protocol(seconds)``: uvicorn's HTTP/1.1 protocol with a deadline on a request's
headers (uvicorn has none: a client that sends half a request line keeps its connection forever).
"""
