"""The Dreamina gallery: an Airflow UI plugin that shows the videos the provider stored.

``plugin.py`` registers it (the ``airflow.plugins`` entry point), ``gallery.py`` is its FastAPI app,
``access.py`` decides who may see what, ``records.py`` finds generations in asset events and
manifests, ``files.py`` reads stored files, ``streaming.py`` answers HTTP Range requests and
``page.py`` renders the HTML page.
"""
