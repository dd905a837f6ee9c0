"""The depot: a closed network's own services, fed from one verified bundle.

A site with several servers runs, on one host inside the closed network, the services its servers already
know how to use, and points them there: an apt repository (apt_repo.py), a Python package index
(pyindex.py), a Hugging Face endpoint (hub.py) and a plain file server (files.py). `airgap serve` answers
them over HTTP straight from the bundle (server.py); `airgap export` writes the same answers as a static
tree for a web server of the site's choice (export.py). Either way the bundle is verified first and every
byte sent or copied is read through the lock (content.py).
"""
