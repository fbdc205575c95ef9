"""Inputs: what may be sent to RunComfy, decided before anything is paid for.

The Dreamina schema's image rules (format, size, sides, ratio), the image source policy (which
local paths and object-storage URIs a task may read, with which connection) and the public-HTTPS
preflight of an image URL. Nothing here talks to RunComfy.
"""
