"""The ``connectome`` command line: a thin click layer over the library (installed as ``connectome_cli``)."""
