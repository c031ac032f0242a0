"""The interactive demo (issue 19): PMG for one request in the browser, with the whole trace.

`service` holds the logic (models loaded once from an environment's catalog, one request run into
the trace of paper Figures 2, 3 and 7 by the method object `components.method.pmg.PMG`), over
`requests` (a request, its limits and checks), `scene_data` (a scene's data from the last run) and
`trace` (what one response shows); `render` turns a trace into the page's HTML and the API's JSON;
`app` is the Gradio layout; `python -m pmg_kedro.demo` (`make demo`) serves it on 127.0.0.1.
"""
