"""One bucket spread over several Bukt nodes behind twemproxy (docs/scale-out.md):
ketama.py predicts where nutcracker puts a key, twemproxy.py writes its pool."""
