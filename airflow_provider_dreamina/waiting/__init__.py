"""Waiting: how every path follows a request, and what its end means.

One waiting policy (poll intervals, ``Retry-After``, tolerated errors, the deadline and what is
cancelled there) for the hook, the trigger, the sensor and the operator; one outcome decision (a
terminal result becomes a success or one typed error) and the trigger event that carries it.
"""
