"""Shared test helpers, one module per job: config composition and the repository's paths (config), polling
(waiting), HAM10000-shaped predictions (predictions), tiny Keras classifiers (models), corrupt JPEGs (jpegs), the
Keras-backend runner (backends, backend_runner), the stand-in sweeper app (sweeper), real servers and raw HTTP
(servers), the shipping tests' tracking store (shipping) and headless Chromium (browser). The rule: test modules
import shared helpers from here, never from another test module or from conftest (tests/conftest.py holds only
fixtures and hooks; tests/test_test_layout.py checks the rule). Importable as `helpers` because pytest's default
"prepend" import mode puts tests/ on sys.path.
"""
