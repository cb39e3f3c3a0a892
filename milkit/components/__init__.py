"""milkit's built-in components, one folder per interface.

Each folder's ``__init__`` is a plugin module: its ``@hookimpl`` functions register the
folder's classes through the same hooks a third-party plugin uses. Core never imports
this package; the plugin manager does (see ``milkit.plugins.BUILTIN_PLUGINS``).
"""
