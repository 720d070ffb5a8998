"""`tools/bench compare`: the same load into logd and into a peer (rsyslog), one after the
other on one machine, sampled every second; results as CSV, charts and a report.

    benchkit.scenarios      what each scenario sends and which records it keeps
    benchkit.sender         tools/loadgen as the sender, for every tool alike
    benchkit.sampler        CPU%, RSS and records written, once a second
    benchkit.peers          the tools under test: logd, rsyslog (config, start, stop)
    benchkit.rsyslog_conf   rsyslog's config in RainerScript
    benchkit.results        samples and per-run facts; results.csv; the summary table
    benchkit.charts         the PNG charts (matplotlib)
    benchkit.report         report.md
    benchkit.compare        the command line and the run order
"""
