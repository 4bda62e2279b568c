"""`bukt serve`: the supervisor of the whole service, systemd's notify protocol,
the processes it reads from /proc and the probes that tell whether a face listens."""
