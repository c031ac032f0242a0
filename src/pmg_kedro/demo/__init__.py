"""The interactive demo (issue 19): PMG for one request in the browser, with the whole trace.

`service` holds the logic (models loaded once from an environment's catalog, requests validated,
the trace of paper Figures 2, 3 and 7 built by the method object `components.method.pmg.PMG`); `render`
turns a trace into the page's HTML and the API's JSON; `app` is the Gradio layout; `python -m
pmg_kedro.demo` (`make demo`) serves it on 127.0.0.1.
"""
