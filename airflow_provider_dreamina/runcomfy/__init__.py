"""The HTTP client of RunComfy's Model API, one concern per module.

``settings`` reads the connection, ``clients`` builds the httpx clients and their pool slots,
``calls`` describes each API call, ``retries`` decides whether and when to send again (the
paid-submit rule included), ``answers`` turns an HTTP answer into a model or a typed error, and
``send`` is the one loop (a sync and an async twin) that puts them together. ``DreaminaHook`` is
the only user.
"""
