"""Outputs: getting a finished request's videos into storage, verified.

The resumable, bounded transfer of one output; destinations (a local directory or any Airflow
object store, written atomically); the check that a video is one (its MP4 boxes as they stream
past, optionally every frame decoded); and the manifest written beside each stored file.
"""
