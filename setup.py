"""The compiled part of logd: word filters over blocks of lines (logd/_linescan.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler logd
installs and runs, and its filters use the Python path (logd.linescan.COMPILED says which).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("logd._linescan", ["logd/_linescan.c"], optional=True,
                             extra_compile_args=["-O2"])])
