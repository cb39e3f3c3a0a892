"""``milkit view``: a local web app to explore a run's slides, attention and reports.

``viewer`` holds the data (framework-free), ``app`` the starlette routes, ``server`` the bind rules
and uvicorn; ``runs``, ``slides``, ``tiles``, ``overlays``, ``cache`` and ``paths`` one concept each;
``static/`` the pages and the vendored OpenSeadragon. Needs the ``view`` extra (starlette, uvicorn)
only for ``app`` and ``server``: ``runs.run_token`` (used by report.html) imports neither.
"""
