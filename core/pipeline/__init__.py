"""The machinery of stages: the Stage record, the context a stage runs with, its code
dependencies, plugins named in settings, locks and provenance."""
