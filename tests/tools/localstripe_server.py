"""Runs localstripe (a Stripe API fake, from PyPI) on loopback for one test.

localstripe's own CLI binds every interface and keeps its state in the fixed
file /tmp/localstripe.pickle, which parallel tests would share. Here the store
stays in memory, so each test's server is isolated.

usage: python localstripe_server.py PORT
"""

import sys

from aiohttp import web
from localstripe import resources
from localstripe.server import app

resources.Store.try_load_from_disk = lambda self: None
resources.Store.dump_to_disk = lambda self: None

web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
