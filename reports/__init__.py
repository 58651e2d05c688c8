"""The report generator and the command line of lossparity.

* :mod:`reports.matrix`: the parity matrix engine that the tests and the report share;
* :mod:`reports.timing`: the timings of every implementation beside the built-ins;
* :mod:`reports.report`: the pandas frames, ``parity.csv``, ``timings.csv``, ``REPORT.md``
  and ``losses/<name>.md``;
* :mod:`reports.cli`: ``lossparity report | list | show`` (also ``python -m reports``).
"""
