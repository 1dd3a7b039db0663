"""Serving edgeleuk models beyond one process.

* :mod:`edgeleuk.serving.server`: the Ray Serve deployment behind ``edgeleuk serve`` (needs the
  ``ray`` extra);
* :mod:`edgeleuk.serving.front`: what each replica checks before the model sees a request (the
  bearer token, the body's length, pace and the bytes in flight);
* :mod:`edgeleuk.serving.repository`: Triton Inference Server and OpenVINO Model Server
  repositories for shops that run those servers instead (no extra needed).

The wire format both sides of ``edgeleuk serve`` speak lives in :mod:`edgeleuk.runtime.wire`,
beside the ``remote`` backend that reads it, so the client side needs neither Ray nor this package.
Importing this package imports neither Ray nor an engine.
"""
