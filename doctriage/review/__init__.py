"""`doctriage review`: a small web app where a person confirms or corrects the labels of
low-confidence pages and early/full-depth disagreements (app.py: routes; guard.py: token, CSRF
and headers; serving.py: uvicorn). Imported only by that command: Starlette, Jinja2 and
uvicorn load nowhere else."""
