"""Helpers shared by the test suites of the SDK and the services.

``[tool.pytest.ini_options] pythonpath`` puts ``tests/`` on ``sys.path``, so any test imports
these as ``support.<module>`` (``--import-mode=importlib`` keeps the test folders themselves
off it; :func:`support.modules.load_module` loads a helper next to a test by path).
"""
