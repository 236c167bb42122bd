"""Framework integrations, thin layers over the core: ``pgqueue.contrib.django``,
``pgqueue.contrib.flask``.

Each one is an optional extra (``pip install "pgqueue[django]"``); importing ``pgqueue``
never imports a framework.
"""
